"""Where data comes from on the command line: a built-in name or a file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from realnvp.data.tabular import DataError, check_representable, load_table
from realnvp.data.toy import TOY_DATASETS, toy_data

#: rows drawn from a built-in data set when nothing else is asked for
ROWS = 20000


def is_builtin(spec: str) -> bool:
    """Whether ``spec`` names a built-in data set (a file of that name wins)."""
    return spec in TOY_DATASETS and not Path(spec).exists()


def load_data(
    spec: str,
    n: int = ROWS,
    seed: int = 0,
    drop_nonfinite: bool = False,
    min_rows: int = 1,
    columns: int | None = None,
    representable: Callable[[NDArray], NDArray] | None = None,
    usecols: Sequence[int] | None = None,
) -> tuple[NDArray, dict]:
    """Rows of a built-in data set (``n`` of them, drawn with ``seed``) or of a table file (CSV,
    Parquet, Feather, .npy, .npz); returns (N, D) float64 and a description for the run's
    records. ``columns``, ``representable`` and ``usecols``: see ``load_table``."""
    if is_builtin(spec):
        x = toy_data(spec, n, seed)
        if columns is not None and columns != 2:
            raise DataError(f"{spec}: has 2 columns, the model expects {columns}")
        x = x if usecols is None else x[:, list(usecols)]
        check_representable(x, representable, spec)
        return x, {"source": spec, "builtin": True, "n": n, "seed": seed}
    x = load_table(spec, drop_nonfinite, min_rows, columns, representable, usecols)
    return np.asarray(x), {"source": str(Path(spec).resolve()), "builtin": False}
