"""Tables on the command line, read where they lie when they are large: a .npy file is never
loaded (``realnvp.data.store``), a Parquet file is read by row group, and ``realnvp
convert`` turns any table (a CSV too) into a .npy file in bounded memory."""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from realnvp.cli.contexts import Layout
from realnvp.data.checks import check_density_table
from realnvp.data.store import ArrayRows, Rows, is_streamable, open_rows
from realnvp.data.tabular import (
    ARROW_FORMATS,
    DataError,
    _check_file,
    _csv_rows,
    _read_arrow,
    is_header,
    resolve_columns,
    table_header,
)
from realnvp.files import atomic_write
from realnvp.training.rows import SAMPLE, Table

#: values (rows times columns) up to which a Parquet file is loaded to train on: past
#: it, random batches would decode whole row groups at every step, so ``convert`` is asked for
LOAD_VALUES = 2**26
#: bytes of CSV past which ``train`` says that reading it holds it in memory
BIG_CSV = 256 * 2**20


def convert_hint(path: str | Path, extra: str = "") -> str:
    """The ``realnvp convert`` command that makes a .npy file of ``path`` (of another name
    than ``path``'s own)."""
    path = Path(path)
    name = path.stem + (".finite.npy" if path.suffix.lower() == ".npy" else ".npy")
    return f"realnvp convert {path} {name}{extra}"


def training_table(
    args: argparse.Namespace, layout: Layout
) -> tuple[Table, dict[str, Any], NDArray]:
    """The table a table run trains on, where it lies (a .npy file, or a large one that is
    not), its description for the run's records, and a sample of its rows for the checks."""
    spec = args.data
    streamed = Path(spec).suffix.lower() == ".npy" and Path(spec).is_file()
    if streamed:
        _check_file(Path(spec))
        rows = layout.rows(spec)
        if not finite_rows(rows, args.drop_nonfinite):
            streamed = False  # rows to drop: only a table in memory can leave them out
            print(
                f"realnvp train: note: {spec} has rows with NaN or inf; --drop-nonfinite reads "
                "it into memory to leave them out; for a table larger than memory, drop them "
                f"once: {convert_hint(spec, ' --drop-nonfinite')}",
                file=sys.stderr,
            )
    elif is_streamable(spec):
        rows = layout.rows(spec)
        if rows.n * rows.width > LOAD_VALUES:
            raise DataError(
                f"{spec}: {rows.n:,} rows; training reads random rows, which a "
                "Parquet file gives only by decoding whole "
                f"row groups: convert it once to a .npy file, read in place: {convert_hint(spec)}"
            )
    elif _is_csv(spec) and Path(spec).stat().st_size > BIG_CSV:
        size = Path(spec).stat().st_size / 2**20
        print(
            f"realnvp train: note: {spec} is {size:,.0f} MB; a CSV file is read into memory "
            f"(several times its size); for tables larger than memory, convert it once to a "
            f".npy file, read in place: {convert_hint(spec)}",
            file=sys.stderr,
        )
    if streamed:
        info = {"source": str(Path(spec).resolve()), "builtin": False}
        n = min(rows.n, SAMPLE)
        return (
            Table(rows, layout.context),
            info,
            rows.take(np.linspace(0, rows.n - 1, n, dtype=int)),
        )
    array, info = layout.read(spec, args.n, args.data_seed, args.drop_nonfinite, min_rows=2)
    return Table(ArrayRows(array, spec), layout.context), info, array


def nonfinite_error(
    source: str | Path, block: NDArray, lines: NDArray, usecols: list[int] | None, how: str
) -> DataError:
    """The error for the first row of ``block`` that holds NaN or inf, named by its row
    (``lines``: each row's number) and the file's column (``usecols``: the file's column of
    each of the block's), with ``how`` to get past it."""
    row = int(np.argmax(~np.isfinite(block).all(axis=1)))
    col = int(np.argmax(~np.isfinite(block[row])))
    number = (col if usecols is None else usecols[col]) + 1
    return DataError(f"{source}: row {lines[row]}, column {number} is {block[row, col]}; {how}")


def _is_csv(spec: str) -> bool:
    suffix = Path(spec).suffix.lower()
    return Path(spec).is_file() and suffix not in (*ARROW_FORMATS, ".npy", ".npz")


def check_training_table(table: Table, sample: NDArray, spec: str, layout: Layout) -> None:
    """Refuse a table without a density (``check_density_table``) on ``sample``, its rows or
    a sample of them; and one with fewer than 2 rows."""
    if table.rows.n < 2:
        raise DataError(f"{spec}: has {table.rows.n} usable row, at least 2 needed")
    names = None if layout.names is None else layout.modelled_names()
    check_density_table(table.split(sample)[0], spec, names, layout.numbers())


def finite_rows(rows: Rows, drop_nonfinite: bool) -> bool:
    """Whether every value of ``rows`` is finite, in one streaming pass. A non-finite value is
    refused, naming its row and column, unless ``drop_nonfinite`` (then False: the caller
    leaves such rows out)."""
    first, count = None, 0
    for start, chunk in rows.chunks():
        bad = int((~np.isfinite(chunk).all(axis=1)).sum())
        if bad and first is None:
            first = (start, chunk)
        count += bad
    if first is None:
        return True
    if drop_nonfinite:
        return False
    start, chunk = first
    lines = np.arange(start + 1, start + 1 + len(chunk))
    how = (
        f"pass --drop-nonfinite to skip rows with NaN or inf ({count} such rows), or drop them "
        f"once: {convert_hint(rows.source, ' --drop-nonfinite')}"
    )
    raise nonfinite_error(rows.source, chunk, lines, getattr(rows, "usecols", None), how)


# -- realnvp convert ---------------------------------------------------------------------------
#: rows per block that convert writes
BLOCK_ROWS = 65536


def convert(args: argparse.Namespace) -> int:
    """``realnvp convert IN OUT.npy``: any table to a .npy file, in bounded memory, written to a
    temporary file and renamed, so a failed conversion leaves nothing (and an existing OUT as
    it was)."""
    source, out = Path(args.data), Path(args.output)
    _check_file(source)
    if out.suffix.lower() != ".npy":
        raise DataError(f"{out}: convert writes a .npy file; name the output OUT.npy")
    if out.resolve() == source.resolve():
        raise DataError(f"{out}: is the input; write the .npy file elsewhere")
    names, width = table_header(source)
    usecols = resolve_columns(args.columns, names, width, source) if args.columns else None
    dtype = np.dtype(args.dtype)
    blocks = _blocks(source, usecols, width)
    counts: list[int] = []

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            counts.extend(_write_npy(f, blocks, dtype, args.drop_nonfinite, source, usecols))
        if counts[0] == 0:
            raise DataError(f"{source}: has no usable rows")

    atomic_write(out, write)  # a temporary file, flushed and renamed: a failure leaves nothing
    n, dropped, columns = counts
    kept = [names[j] for j in (usecols or range(width))] if names else None
    what = f" ({', '.join(kept)})" if kept else ""
    skipped = f", {dropped:,} rows with NaN or inf left out" if dropped else ""
    print(f"wrote {out}: {n:,} rows x {columns} columns{what}, {dtype}{skipped}", file=sys.stderr)
    return 0


def _blocks(
    source: Path, usecols: list[int] | None, width: int
) -> Iterator[tuple[NDArray, NDArray]]:
    """``(line or row numbers, rows)`` blocks of the table's chosen columns, float64."""
    if source.suffix.lower() in ARROW_FORMATS and not is_streamable(source):
        x, lines = _read_arrow(source, usecols, None)  # a Feather file is read whole
        for start in range(0, len(x), BLOCK_ROWS):
            yield lines[start : start + BLOCK_ROWS], x[start : start + BLOCK_ROWS]
        return
    if is_streamable(source):
        rows = open_rows(source, usecols)
        for start, chunk in rows.chunks(BLOCK_ROWS):
            yield np.arange(start + 1, start + 1 + len(chunk)), chunk
        return
    if source.suffix.lower() == ".npz":
        raise DataError(f"{source}: convert reads CSV, Parquet, Feather and .npy files")
    yield from _csv_blocks(source, usecols, width)


def _csv_blocks(
    source: Path, usecols: list[int] | None, width: int
) -> Iterator[tuple[NDArray, NDArray]]:
    picked = list(range(width)) if usecols is None else usecols
    with open(source, newline="", encoding="utf-8-sig") as f:
        block: list[list[float]] = []
        lines: list[int] = []
        for k, (line, row) in enumerate(_csv_rows(f)):
            if k == 0 and is_header(row):
                continue
            if len(row) != width:
                raise DataError(f"{source}: row {line} has {len(row)} columns, expected {width}")
            try:
                block.append([float(row[j]) for j in picked])
            except ValueError:
                j = next(j for j in picked if not _is_number(row[j]))
                shown = repr(row[j]) if row[j].strip() else "an empty cell"
                raise DataError(
                    f"{source}: row {line}, column {j + 1}: {shown} is not a number"
                ) from None
            lines.append(line)
            if len(block) == BLOCK_ROWS:
                yield np.asarray(lines), np.asarray(block)
                block, lines = [], []
        if block:
            yield np.asarray(lines), np.asarray(block)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _write_npy(
    f: BinaryIO,
    blocks: Iterator[tuple[NDArray, NDArray]],
    dtype: np.dtype,
    drop: bool,
    source: Path,
    usecols: list[int] | None = None,
) -> tuple[int, int, int]:
    """Write the blocks' rows to ``f`` as a .npy file (its header written last, in space
    reserved first); returns (rows written, rows dropped, columns)."""
    header_size = 128
    f.write(b"\0" * header_size)
    n = dropped = 0
    columns = None
    for lines, block in blocks:
        columns = block.shape[1]
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any() and not drop:
            how = "pass --drop-nonfinite to leave such rows out"
            raise nonfinite_error(source, block, lines, usecols, how)
        with np.errstate(over="ignore"):
            values = block.astype(dtype)
        overflow = ~bad & ~np.isfinite(values).all(axis=1)
        if overflow.any():
            row = int(np.argmax(overflow))
            raise DataError(
                f"{source}: row {lines[row]} holds a value that overflows {dtype}; "
                "use --dtype float64"
            )
        dropped += int(bad.sum())
        f.write(np.ascontiguousarray(values[~bad]).tobytes())
        n += int((~bad).sum())
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": (n, columns or 0),
    }
    text = repr(header).encode("latin1")
    prefix = b"\x93NUMPY\x01\x00"
    body = text + b" " * (header_size - len(prefix) - 2 - len(text) - 1) + b"\n"
    assert len(prefix) + 2 + len(body) == header_size and ast.literal_eval(text.decode())
    f.seek(0)
    f.write(prefix + len(body).to_bytes(2, "little") + body)
    return n, dropped, columns or 0


# -- eval, score, encode and decode, chunk by chunk ----------------------------------------------
def chunk_rows(width: int) -> int:
    """Rows per chunk that eval, score, encode and decode read: 2^20 values, 65,536 rows at
    most (as ``realnvp.training.loop.eval_batch_size``)."""
    return max(1, min(65536, 2**20 // max(1, width)))


def stream_table(
    spec: str, layout: Layout, drop_nonfinite: bool, in_range: Callable[[NDArray], NDArray]
) -> Iterator[tuple[int, NDArray, NDArray, NDArray | None]]:
    """``(chunk number, row numbers, modelled columns, contexts)`` of the table ``spec``
    read in place, chunk by chunk: a non-finite value is refused naming its row and column
    (or its row left out, with ``drop_nonfinite``), and so is a value that ``in_range``
    rejects (it maps the modelled columns to a boolean array of their shape)."""
    rows = layout.rows(spec)
    usecols = getattr(rows, "usecols", None)
    for i, (start, chunk) in enumerate(rows.chunks(chunk_rows(rows.width))):
        bad = ~np.isfinite(chunk).all(axis=1)
        lines = np.arange(start + 1, start + 1 + len(chunk))
        if bad.any() and not drop_nonfinite:
            how = "pass --drop-nonfinite to skip rows with NaN or inf"
            raise nonfinite_error(spec, chunk, lines, usecols, how)
        lines = lines[~bad]
        if not len(lines):  # every row of the chunk dropped
            continue
        x, context = layout.split(chunk[~bad] if bad.any() else chunk)
        outside = ~np.asarray(in_range(x), dtype=bool)
        if outside.any():
            row, col = (int(a) for a in np.argwhere(outside)[0])
            j = layout.modelled[col]
            number = (j if usecols is None else usecols[j]) + 1
            raise DataError(
                f"{spec}: row {lines[row]}, column {number}: {x[row, col]:g} is out of the "
                "range the model computes in (it overflows float32)"
            )
        yield i, lines, x, context


class Moments:
    """Count, mean and sum of squared deviations of a stream of values, merged chunk by chunk
    (Chan, Golub and LeVeque's update), in float64."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: NDArray) -> None:
        values = np.asarray(values, dtype=np.float64)
        n, mean = len(values), float(values.mean()) if len(values) else 0.0
        if not n:
            return
        m2 = float(((values - mean) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.n * n / total
        self.n = total

    @property
    def se(self) -> float:
        """The standard error of the mean."""
        return float(np.sqrt(self.m2 / (self.n - 1) / self.n)) if self.n > 1 else float("nan")
