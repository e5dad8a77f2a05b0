"""Whether a table can have a density at all: every column must vary, and no column may be a
linear function of the others."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from realnvp.data.tabular import DataError

#: the smallest singular value of a table's standardized columns, relative to the largest, below
#: which the columns are linearly dependent: float64 rounding leaves about 1e-15
COLLINEAR = 1e-10


def _label(j: int, names: Sequence[str] | None, numbers: Sequence[int] | None) -> str:
    number = j + 1 if numbers is None else numbers[j]
    return f"{number} ({names[j]!r})" if names else str(number)


def check_density_table(
    x: NDArray,
    source: str | Path,
    names: Sequence[str] | None = None,
    numbers: Sequence[int] | None = None,
    how: str = "with --columns",
) -> None:
    """Refuse training data without a density: a constant column, or linearly dependent columns
    (standardized, smallest singular value under ``COLLINEAR`` times the largest, in float64).

    Args:
        x: (N, D) finite float64, the columns to model.
        source: the file (or array) named in the message.
        names: each column's name.
        numbers: each column's number (from 1) in ``source``.
        how: how the user leaves a column out, at the end of the message.

    Examples:
        >>> x = np.c_[np.arange(4.0), 2 * np.arange(4.0) + 1, [0, 1, 0, 1]]
        >>> check_density_table(x, "t", ["a", "b", "c"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        realnvp.data.tabular.DataError: t: columns 1 ('a') and 2 ('b') are perfectly collinear ...
    """
    x = np.asarray(x, dtype=np.float64)
    constant = [j for j in range(x.shape[1]) if len(x) and np.all(x[:, j] == x[0, j])]
    if constant:
        labels = [_label(j, names, numbers) for j in constant]
        values = ", ".join(f"{x[0, j]:.10g}" for j in constant)
        if len(constant) == 1:
            where = f"column {labels[0]} is constant (every row is {values})"
        else:
            where = f"columns {', '.join(labels)} are constant (each holds one value: {values})"
        one = "it" if len(constant) == 1 else "them"
        raise DataError(
            f"{source}: {where}: a density needs each column to vary; leave {one} out {how}"
        )
    if len(x) <= x.shape[1]:  # too few rows to tell a dependency from chance
        return
    z = x / np.abs(x).max(axis=0)  # no column is constant, so none is all zeros
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    # the singular values of z are those of its R factor, a D x D matrix
    _, s, vt = np.linalg.svd(np.linalg.qr(z, mode="r"))
    if s[-1] >= COLLINEAR * s[0]:
        return
    weight = np.abs(vt[-1])
    dependent = [j for j in range(x.shape[1]) if weight[j] > 1e-6 * weight.max()]
    labels = [_label(j, names, numbers) for j in dependent]
    if len(dependent) == 2:
        r = abs(np.corrcoef(z[:, dependent].T)[0, 1])  # z: scaled, so nothing overflows
        raise DataError(
            f"{source}: columns {labels[0]} and {labels[1]} are perfectly collinear "
            f"(|correlation| = {r:.6f}): the density is concentrated on a line; leave one out "
            f"{how}"
        )
    raise DataError(
        f"{source}: columns {', '.join(labels[:-1])} and {labels[-1]} are linearly dependent (one "
        "is a linear combination of the others, to float64 precision): the density is "
        f"concentrated on a hyperplane; leave one out {how}"
    )
