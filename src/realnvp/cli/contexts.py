"""Which columns of a table a run reads (``--columns``), which of them it conditions on
(``--context``), and the contexts ``sample`` is given (``--context``, ``--context-file``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from realnvp.data.sources import load_data
from realnvp.data.store import Rows, open_rows
from realnvp.data.tabular import (
    DataError,
    column_names,
    is_header,
    load_table,
    resolve_columns,
)


@dataclass(frozen=True)
class Layout:
    """The columns of a table run's table: ``width`` in all, ``context`` (0-based) the ones it
    conditions on, the others the ones it models; ``names`` from the header, if any. With
    ``--columns`` the table is some columns of a file: ``source`` holds their positions in the
    training file, which had ``source_width`` columns (None: the table is the whole file).

    Every table the run reads (training data, and what ``eval``, ``score``, ``encode`` and
    ``audit`` are given) is read into this layout: with ``source``, its columns are picked by
    name (by position when a file has no header); ``encode`` writes, and ``decode`` reads, the
    layout itself, with the modelled columns replaced."""

    width: int
    context: tuple[int, ...] = ()
    names: tuple[str, ...] | None = None
    source: tuple[int, ...] | None = None
    source_width: int | None = None

    @property
    def modelled(self) -> list[int]:
        return [j for j in range(self.width) if j not in self.context]

    def context_names(self) -> list[str]:
        return [self.names[j] if self.names else f"c{k + 1}" for k, j in enumerate(self.context)]

    def modelled_names(self, prefix: str = "x") -> list[str]:
        if self.names and prefix == "x":
            return [self.names[j] for j in self.modelled]
        return [f"{prefix}{k + 1}" for k in range(len(self.modelled))]

    def numbers(self) -> list[int]:
        """Each modelled column's number (from 1) in the training file."""
        return [(j if self.source is None else self.source[j]) + 1 for j in self.modelled]

    def header(self, prefix: str = "x") -> list[str]:
        """Column names of a table in this layout whose modelled columns hold ``prefix``
        values (``x``: the data's own names; ``z``: latent codes)."""
        out = [""] * self.width
        for j, name in zip(self.modelled, self.modelled_names(prefix), strict=True):
            out[j] = name
        for j, name in zip(self.context, self.context_names(), strict=True):
            out[j] = name
        return out

    def split(self, x: NDArray) -> tuple[NDArray, NDArray | None]:
        """A table's modelled columns and its context columns (None for an unconditional run)."""
        return x[:, self.modelled], x[:, list(self.context)] if self.context else None

    def join(self, modelled: NDArray, context: NDArray | None) -> NDArray:
        """A table of this layout from its two parts."""
        out = np.empty((len(modelled), self.width))
        out[:, self.modelled] = modelled
        if self.context:
            out[:, list(self.context)] = context
        return out

    def to_info(self) -> dict[str, Any]:
        """For the run's records (``model.json``'s ``data``): ``columns``, the file's columns
        the run reads, and ``context_columns``, the layout of a conditional run's table."""
        names = None if self.names is None else list(self.names)
        out: dict[str, Any] = {}
        if self.source is not None:
            out["columns"] = {
                "names": names,
                "positions": list(self.source),
                "width": self.source_width,
            }
        if self.context:
            out["context_columns"] = {
                "width": self.width,
                "context": list(self.context),
                "names": names,
            }
        return out

    @classmethod
    def from_info(cls, data: dict[str, Any], width: int) -> Layout:
        """The layout a run recorded; a run that records none reads all ``width`` columns
        (named as its training file's header named them, if it had one)."""
        columns, context = data.get("columns"), data.get("context_columns") or {}
        modelled = data.get("modelled")  # a header of numbers would read back as a row
        info = (
            columns or context or {"names": modelled if modelled and is_header(modelled) else None}
        )
        names = tuple(info["names"]) if info.get("names") else None
        if columns:
            source = tuple(columns["positions"])
            return cls(
                len(source), tuple(context.get("context", ())), names, source, columns["width"]
            )
        return cls(int(context.get("width", width)), tuple(context.get("context", ())), names)

    @classmethod
    def of(
        cls,
        spec: str,
        names: list[str] | None,
        width: int,
        columns: str | None,
        context: str | None,
    ) -> Layout:
        """The layout that ``--columns`` and ``--context`` ask of the table ``spec``, whose
        header is ``names`` (None: none) and which has ``width`` columns. The table is the
        columns chosen and the context columns, in the file's order."""
        used = resolve_columns(columns, names, width, spec) if columns else list(range(width))
        given = resolve_columns(context, names, width, spec) if context else []
        table = sorted(set(used) | set(given))
        modelled = len(table) - len(given)
        if modelled < 2 and given:
            raise DataError(
                f"{spec}: conditioning on {len(given)} of {len(table)} columns leaves "
                f"{modelled} to model; Real NVP needs at least 2"
            )
        if modelled < 2:
            what = "--columns chooses" if columns else "has"
            raise DataError(
                f"{spec}: {what} {modelled} column{'s' * (modelled != 1)}; Real NVP needs at "
                "least 2"
            )
        return cls(
            len(table),
            tuple(table.index(j) for j in given),
            None if names is None else tuple(names[j] for j in table),
            tuple(table) if columns else None,
            width if columns else None,
        )

    def read(
        self,
        spec: str,
        n: int,
        seed: int,
        drop_nonfinite: bool,
        min_rows: int = 1,
        representable: Callable[[NDArray], NDArray] | None = None,
    ) -> tuple[NDArray, dict[str, Any]]:
        """The table ``spec`` read into this layout, and ``load_data``'s description of it;
        ``representable``: see ``load_table``."""
        usecols, width = self._columns_in(spec)
        return load_data(spec, n, seed, drop_nonfinite, min_rows, width, representable, usecols)

    def rows(self, spec: str) -> Rows:
        """The table ``spec`` in this layout, where it lies (a .npy or Parquet file,
        see ``realnvp.data.store``)."""
        usecols, width = self._columns_in(spec)
        rows = open_rows(spec, usecols)
        if width is not None and rows.file_width != width:
            raise DataError(f"{spec}: has {rows.file_width} columns, the model expects {width}")
        return rows

    def _columns_in(self, spec: str) -> tuple[list[int] | None, int | None]:
        """Which columns of ``spec`` form the table (None: all), and how many ``spec`` must
        have (None: any number, the columns being picked by name)."""
        header = column_names(spec)
        if self.source is None:
            if (
                self.names
                and header is not None
                and len(header) == self.width
                and tuple(header) != self.names
            ):
                raise DataError(
                    f"{spec}: its columns are {', '.join(header)}; the model was trained on "
                    f"{', '.join(self.names)}"
                )
            return None, self.width
        if self.names is None or header is None:
            return list(self.source), self.source_width
        missing = [name for name in self.names if name not in header]
        if missing:
            many = len(missing) > 1
            raise DataError(
                f"{spec}: has no column{'s' * many} {', '.join(missing)}; the model reads "
                f"{', '.join(self.names)} (its columns are {', '.join(header)})"
            )
        return [header.index(name) for name in self.names], None


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
