"""Tables read where they lie: a .npy file read in place (positioned reads), a Parquet file
read by row group, or an array already in memory, behind one interface (``Rows``): ``read`` a
range of rows, ``take`` rows by number, iterate ``chunks``. Every read gives float64 rows of the
chosen columns, so what a model sees does not depend on where the rows were.

A process that trains on a table of 10^8 rows through ``Rows`` holds a batch, a chunk and a few
buffers, not the table; the operating system's page cache holds what it can of the file, and
shares it between the processes of a torchrun job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from realnvp.data.tabular import (
    DataError,
    _arrow_kind,
    _data_columns,
    _not_numbers,
    _pyarrow,
    load_numpy,
    numeric_table,
)

#: values (rows times columns) per chunk of a streaming pass: 8 MB of float64
CHUNK_VALUES = 2**20


class Rows:
    """A table of ``n`` rows and ``width`` float64 columns, read in pieces.

    Subclasses give ``_read(start, stop)`` and may give a faster ``take``.
    """

    source: str
    n: int
    width: int
    file_width: int  # the file's columns, of which ``width`` are read

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.width

    def read(self, start: int, stop: int) -> NDArray:
        """Rows ``start .. stop-1``: (stop - start, width) float64."""
        return self._read(max(0, start), min(stop, self.n))

    def _read(self, start: int, stop: int) -> NDArray:
        raise NotImplementedError

    def take(self, index: NDArray) -> NDArray:
        """The rows numbered ``index`` (0-based), in that order: (len(index), width) float64."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), self.width))
        order = np.argsort(index, kind="stable")
        for start, chunk in self.chunks():
            lo, hi = np.searchsorted(index[order], [start, start + len(chunk)])
            out[order[lo:hi]] = chunk[index[order[lo:hi]] - start]
        return out

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, NDArray]]:
        """``(start, rows)`` for consecutive pieces of the table, ``rows`` rows each (default:
        ``CHUNK_VALUES`` values)."""
        rows = rows or max(1, CHUNK_VALUES // max(1, self.width))
        for start in range(0, self.n, rows):
            yield start, self.read(start, start + rows)


class ArrayRows(Rows):
    """Rows of an array in memory (N, D)."""

    def __init__(self, x: NDArray, source: str = "array"):
        self.x = np.asarray(x, dtype=np.float64)
        if self.x.ndim != 2:
            raise ValueError(f"expected a table (N, D), got shape {self.x.shape}")
        self.source, (self.n, self.width) = source, self.x.shape
        self.file_width = self.width

    def _read(self, start: int, stop: int) -> NDArray:
        return self.x[start:stop]

    def take(self, index: NDArray) -> NDArray:
        return self.x[np.asarray(index, dtype=np.int64)]


class NpyRows(Rows):
    """The rows of a 2-D (or 1-D: one column) .npy file of real numbers, read in place: a range
    of rows with one positioned read (``os.pread``), a batch of rows with one read per row, so
    the process holds what it read and nothing of the file (a memory map would keep the pages
    it touched resident, and the kernel maps the neighbours of each page touched too: a batch of
    256 random rows mapped ~100 MB of a 240 MB file). The operating system's page cache keeps
    what it can of the file. ``usecols`` picks columns, 0-based, in that order."""

    def __init__(self, path: str | Path, usecols: Sequence[int] | None = None):
        path = Path(path)
        array = _npy_header(path)
        self.source, self.n, self.file_width = str(path), array.shape[0], array.shape[1]
        self.usecols = None if usecols is None else list(usecols)
        self.width = self.file_width if self.usecols is None else len(self.usecols)
        self.dtype = array.dtype
        self.row_bytes = array.dtype.itemsize * self.file_width
        # a Fortran-ordered file holds columns, not rows, contiguously: read through the map
        self.array = array if array.flags.f_contiguous and self.file_width > 1 else None
        self.offset = 0 if self.array is not None else array.offset
        self.path = path

    def _columns(self, rows: NDArray) -> NDArray:
        rows = rows if self.usecols is None else rows[:, self.usecols]
        return np.array(rows, dtype=np.float64)  # a copy: nothing refers to a buffer after it

    def _rows(self, data: bytes, count: int) -> NDArray:
        return np.frombuffer(data, dtype=self.dtype, count=count * self.file_width).reshape(
            count, self.file_width
        )

    def _read(self, start: int, stop: int) -> NDArray:
        if self.array is not None:
            return self._columns(self.array[start:stop])
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.row_bytes)
            data = f.read((stop - start) * self.row_bytes)
        return self._columns(self._rows(data, stop - start))

    def take(self, index: NDArray) -> NDArray:
        index = np.asarray(index, dtype=np.int64)
        if self.array is not None:
            return self._columns(self.array[index])
        size, offset = self.row_bytes, self.offset
        with open(self.path, "rb") as f:
            if hasattr(os, "pread"):
                fd = f.fileno()
                data = b"".join(os.pread(fd, size, offset + r * size) for r in index.tolist())
            else:  # no positioned reads (Windows): seek and read
                parts = []
                for r in index.tolist():
                    f.seek(offset + r * size)
                    parts.append(f.read(size))
                data = b"".join(parts)
        return self._columns(self._rows(data, len(index)))


def _npy_header(path: Path) -> Any:
    """The .npy file's shape, dtype and data offset, as a read-only memory map of it (2-D),
    refused unless it holds a table of real numbers."""
    return numeric_table(path, load_numpy(path, "r"))


class ParquetRows(Rows):
    """The rows of a Parquet file, read one row group at a time, the chosen numeric columns as
    float64, nulls as NaN. ``usecols`` picks data columns, 0-based, in that order."""

    def __init__(self, path: str | Path, usecols: Sequence[int] | None = None):
        path = Path(path)
        self.pa, self.source = _pyarrow(path), str(path)
        try:
            self.file: Any = self.pa.parquet.ParquetFile(path)
        except (self.pa.ArrowException, OSError) as error:
            raise DataError(f"{path}: not a readable Parquet file ({error})") from None
        schema = self.file.schema_arrow
        data = _data_columns(schema)
        picked = [data[j] for j in (range(len(data)) if usecols is None else usecols)]
        kinds = {j: _arrow_kind(self.pa, schema.field(j).type) for j in picked}
        foreign = [j for j in picked if kinds[j] is not None]
        if foreign:
            raise self._foreign(path, schema, foreign, kinds)
        self.names = [schema.names[j] for j in picked]
        self.usecols = None if usecols is None else list(usecols)
        self.file_width, self.width = len(data), len(picked)
        sizes = [self.file.metadata.row_group(g).num_rows for g in range(self.file.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.n = int(self.starts[-1])
        self.cached: tuple[int, NDArray] | None = None

    def _foreign(self, path: Path, schema: Any, foreign: list[int], kinds: dict) -> DataError:
        """The error for columns that hold something else than numbers, all named, with the
        first value of the first one (from the first row group that has one)."""
        what = " and ".join(dict.fromkeys(k for k in kinds.values() if k is not None))
        name, example = schema.names[foreign[0]], "every value is null"
        for g in range(self.file.num_row_groups):
            column = self.file.read_row_group(g, columns=[name]).column(0)
            row = self.pa.compute.index(column.is_valid(), True).as_py()
            if row >= 0:
                value = column[row].as_py()
                start = sum(self.file.metadata.row_group(i).num_rows for i in range(g))
                shown = repr(value) if isinstance(value, str) else str(value)
                example = f"e.g. {shown} in row {start + row + 1}"
                break
        return _not_numbers(path, [schema.names[j] for j in foreign], what, example)

    def _group(self, g: int) -> NDArray:
        """Row group ``g``, its chosen columns as float64: the last one read is kept."""
        if self.cached is not None and self.cached[0] == g:
            return self.cached[1]
        out = self._floats(self.file.read_row_group(g, columns=self.names))
        self.cached = (g, out)
        return out

    def _floats(self, table: Any) -> NDArray:
        """An Arrow table's or record batch's columns as one float64 array, nulls as NaN."""
        out = np.empty((table.num_rows, self.width))
        for i in range(self.width):
            column = table.column(i).cast(self.pa.float64(), safe=False)
            out[:, i] = column.to_numpy(zero_copy_only=False)
        return out

    def _read(self, start: int, stop: int) -> NDArray:
        if stop <= start:
            return np.empty((0, self.width))
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        last = int(np.searchsorted(self.starts, stop - 1, side="right")) - 1
        parts = [self._group(g) for g in range(first, last + 1)]
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        offset = int(self.starts[first])
        return rows[start - offset : stop - offset]

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, NDArray]]:
        """Consecutive pieces of ``rows`` rows, decoded batch by batch (``iter_batches``), so
        that a file of huge row groups is not held whole either."""
        rows = rows or max(1, CHUNK_VALUES // max(1, self.width))
        start = 0
        for batch in self.file.iter_batches(batch_size=rows, columns=self.names):
            out = self._floats(batch)
            yield start, out
            start += len(out)


PARQUET = (".parquet", ".pq")


def open_rows(path: str | Path, usecols: Sequence[int] | None = None) -> Rows:
    """The rows of a .npy file (read in place) or a Parquet file (by row group)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return NpyRows(path, usecols)
    if suffix in PARQUET:
        return ParquetRows(path, usecols)
    raise DataError(f"{path}: only .npy and Parquet files are read in place")


def is_streamable(path: str | Path) -> bool:
    """Whether ``path`` is a file that ``open_rows`` reads without loading it."""
    suffix = Path(path).suffix.lower()
    return Path(path).is_file() and (suffix == ".npy" or suffix in PARQUET)


@dataclass
class TableSummary:
    """What a table model is built from when its training rows are not in memory: their
    number, a sample of them (all, up to a size) for the checks and the rounding detection, and
    the standardization statistics, ``[mean, std]`` of the modelled columns (float64) and, for a
    conditional model, ``[mean, std]`` of the contexts after them."""

    rows: int
    sample: NDArray
    moments: list[NDArray]
    context_sample: NDArray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.sample.shape[1]
