"""Contexts on the command line: which columns of a table a conditional run conditions on, and
the contexts ``sample`` is given (``--context``, ``--context-file``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from realnvp.data.tabular import DataError, column_names, load_table, resolve_columns


@dataclass(frozen=True)
class Layout:
    """The columns of a conditional run's tables: ``width`` in all, ``context`` (0-based) the
    ones it conditions on, the others the ones it models; ``names`` from the header, if any.

    Every table the run reads (training data, and what ``eval``, ``score``, ``encode`` and
    ``decode`` are given) has this layout; ``encode`` and ``decode`` write it back with the
    modelled columns replaced."""

    width: int
    context: tuple[int, ...]
    names: tuple[str, ...] | None = None

    @property
    def modelled(self) -> list[int]:
        return [j for j in range(self.width) if j not in self.context]

    def context_names(self) -> list[str]:
        return [self.names[j] if self.names else f"c{k + 1}" for k, j in enumerate(self.context)]

    def modelled_names(self, prefix: str = "x") -> list[str]:
        if self.names and prefix == "x":
            return [self.names[j] for j in self.modelled]
        return [f"{prefix}{k + 1}" for k in range(len(self.modelled))]

    def header(self, prefix: str = "x") -> list[str]:
        """Column names of a table in this layout whose modelled columns hold ``prefix``
        values (``x``: the data's own names; ``z``: latent codes)."""
        out = [""] * self.width
        for j, name in zip(self.modelled, self.modelled_names(prefix), strict=True):
            out[j] = name
        for j, name in zip(self.context, self.context_names(), strict=True):
            out[j] = name
        return out

    def split(self, x: NDArray) -> tuple[NDArray, NDArray]:
        """A table's modelled columns and its context columns."""
        return x[:, self.modelled], x[:, list(self.context)]

    def join(self, modelled: NDArray, context: NDArray) -> NDArray:
        """A table of this layout from its two parts."""
        out = np.empty((len(modelled), self.width))
        out[:, self.modelled], out[:, list(self.context)] = modelled, context
        return out

    def to_info(self) -> dict[str, Any]:
        """For the run's records (``model.json``'s ``data``)."""
        return {"width": self.width, "context": list(self.context), "names": self.names}

    @classmethod
    def from_info(cls, data: dict[str, Any]) -> Layout | None:
        """The layout a run recorded, or None for an unconditional run."""
        info = data.get("context_columns")
        if not info:
            return None
        names = tuple(info["names"]) if info.get("names") else None
        return cls(int(info["width"]), tuple(info["context"]), names)

    @classmethod
    def of(cls, spec: str, columns: str, width: int) -> Layout:
        """The layout ``--context COLUMNS`` asks of the table ``spec``, ``width`` columns."""
        names = column_names(spec)
        context = resolve_columns(columns, names, width, spec)
        if width - len(context) < 2:
            raise DataError(
                f"{spec}: conditioning on {len(context)} of {width} columns leaves "
                f"{width - len(context)} to model; Real NVP needs at least 2"
            )
        return cls(width, tuple(context), None if names is None else tuple(names))

    def check(self, spec: str) -> None:
        """Refuse a table whose header names other columns than the run's (their number is
        checked as the table is read)."""
        names = column_names(spec)
        if self.names and names and tuple(names) != self.names:
            raise DataError(
                f"{spec}: its columns are {', '.join(names)}; the model was trained on "
                f"{', '.join(self.names)}"
            )


def parse_context(text: str, size: int, names: list[str]) -> NDArray:
    """One context from ``--context "1.5,0.2"``: (1, size) float64."""
    items = [s.strip() for s in text.split(",")]
    try:
        values = [float(s) for s in items]
    except ValueError:
        raise DataError(f"--context: {text!r} is not a list of numbers, e.g. 1.5,0.2") from None
    if len(values) != size:
        raise DataError(
            f"--context: {len(values)} value{'s' * (len(values) != 1)}; the model takes {size} "
            f"({', '.join(names)})"
        )
    bad = [s for s, v in zip(items, values, strict=True) if not math.isfinite(v)]
    if bad:
        raise DataError(f"--context: {bad[0]} is not a finite number")
    return np.asarray([values])


def read_contexts(path: str, layout: Layout) -> NDArray:
    """Contexts from ``--context-file``, one per row: (N, C) float64. A header, if the file
    has one and the training table had one, must name the run's context columns."""
    contexts = load_table(path, columns=len(layout.context))
    header, names = column_names(path), layout.context_names()
    if header is not None and layout.names is not None and header != names:
        raise DataError(f"{path}: its columns are {', '.join(header)}; expected {', '.join(names)}")
    return contexts
