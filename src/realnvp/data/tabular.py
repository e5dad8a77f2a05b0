"""Reading a user's table (CSV, Parquet, Feather/Arrow IPC, .npy, .npz) with errors that say what
is wrong and where."""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
from numpy.typing import NDArray

#: the file suffixes read with pyarrow, and the format each names
ARROW_FORMATS = {
    ".parquet": "Parquet",
    ".pq": "Parquet",
    ".feather": "Feather",
    ".arrow": "Arrow IPC",
    ".ipc": "Arrow IPC",
}
NUMPY_SUFFIXES = (".npy", ".npz")


class DataError(ValueError):
    """The user's data is unusable; the message names the file, and the row and column."""


def _parse_float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _csv_rows(f: TextIO) -> Iterator[tuple[int, list[str]]]:
    """The non-empty rows of an open CSV file and their line numbers; the delimiter (comma,
    semicolon, tab or space) is sniffed from the first 4 KiB."""
    sample = f.read(4096)
    f.seek(0)
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t ").delimiter
    except csv.Error:
        delimiter = ","
    return ((i, r) for i, r in enumerate(csv.reader(f, delimiter=delimiter), 1) if r)


def is_header(row: list[str]) -> bool:
    """A CSV header: no cell of it is a number."""
    return all(_parse_float(c.strip()) is None for c in row)


def _check_width(path: Path, width: int, columns: int | None) -> None:
    if columns is not None and width != columns:
        raise DataError(f"{path}: has {width} columns, the model expects {columns}")


def _not_numbers(path: Path, labels: list[str], what: str, example: str) -> DataError:
    """One error for every column that holds something else than numbers."""
    many = len(labels) > 1
    return DataError(
        f"{path}: column{'s' * many} {', '.join(labels)} hold{'s' * (not many)} {what} "
        f"({example}), not numbers; choose the numeric ones with --columns"
    )


def _read_csv(
    path: Path, usecols: Sequence[int] | None, columns: int | None
) -> tuple[NDArray, NDArray]:
    """The numbers of the columns ``usecols`` (None: all) and each row's line number. A column
    where most non-empty cells are not numbers holds text: all such columns are refused in one
    message; a stray non-number in a numeric column is named by row and column."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(_csv_rows(f))
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    header = [c.strip() for c in rows[0][1]] if is_header(rows[0][1]) else None
    if header is not None:
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: the file has a header but no data rows")
    width = len(rows[0][1])
    for line, row in rows:
        if len(row) != width:
            raise DataError(f"{path}: row {line} has {len(row)} columns, expected {width}")
    _check_width(path, width, columns)
    picked = list(range(width)) if usecols is None else list(usecols)
    lines = np.array([line for line, _ in rows])
    out = np.empty((len(rows), len(picked)))
    try:  # float() takes the cells' surrounding spaces
        for k, (_, row) in enumerate(rows):
            out[k] = [float(c) for c in (row if usecols is None else [row[j] for j in picked])]
    except ValueError:
        raise _non_number(path, rows, picked, header, lines) from None
    return out, lines


def _non_number(
    path: Path,
    rows: list[tuple[int, list[str]]],
    picked: list[int],
    header: list[str] | None,
    lines: NDArray,
) -> DataError:
    """The error for the cells of CSV columns ``picked`` that are not numbers: every column where
    most non-empty cells are not numbers holds text, and is named; else the first such cell."""
    cells = np.array([[row[j].strip() for j in picked] for _, row in rows], dtype=object)
    parsed = np.vectorize(lambda c: _parse_float(c) is not None, otypes=[bool])(cells)
    text = ~parsed & (cells != "")
    texts = np.flatnonzero(text.sum(axis=0) > parsed.sum(axis=0)).tolist()
    if texts:
        labels = [header[picked[i]] if header else str(picked[i] + 1) for i in texts]
        k = int(np.argmax(text[:, texts[0]]))
        return _not_numbers(path, labels, "text", f"e.g. {cells[k, texts[0]]!r} in row {lines[k]}")
    k, i = (int(a) for a in np.argwhere(~parsed)[0])
    shown = repr(rows[k][1][picked[i]]) if cells[k, i] else "an empty cell"
    return DataError(f"{path}: row {lines[k]}, column {picked[i] + 1}: {shown} is not a number")


def load_numpy(path: Path, mmap_mode: Literal["r"] | None = None) -> Any:
    """``np.load`` of a user's file (a memory map of a .npy file with ``mmap_mode``), its
    failures as one ``DataError``; Python objects (a pickle) refused."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower() or "object" in str(error).lower():
            raise DataError(
                f"{path}: holds Python objects (pickle); refused, only numbers load"
            ) from None
        raise DataError(f"{path}: not a readable NumPy file ({error})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable NumPy file ({error})") from None


def numeric_table(path: Path, array: Any) -> Any:
    """``array`` as a table (rows, columns), a 1-D array as one column; refused unless it holds
    real numbers in 1 or 2 dimensions."""
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"{path}: expected real numbers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D table (rows, columns), got shape {array.shape}")
    return array


def _read_numpy(path: Path) -> NDArray:
    loaded = load_numpy(path)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if len(keys) == 1:
                key = keys[0]
            elif "x" in keys or "data" in keys:
                key = "x" if "x" in keys else "data"
            else:
                raise DataError(f"{path}: holds arrays {keys}; name the data array 'x' or 'data'")
            try:
                array = loaded[key]
            except ValueError:
                raise DataError(f"{path}: array {key!r} holds Python objects; refused") from None
    else:
        array = loaded
    return numeric_table(path, array).astype(np.float64)


def _pyarrow(path: Path) -> Any:
    """pyarrow, imported only when a Parquet or Feather file is read: it is an optional extra."""
    try:
        import pyarrow.compute
        import pyarrow.feather
        import pyarrow.parquet
    except ImportError:
        raise DataError(
            f"{path}: reading {ARROW_FORMATS[path.suffix.lower()]} files needs pyarrow: "
            'pip install pyarrow (or pip install "realnvp[tables]")'
        ) from None
    return pyarrow


def _arrow_read(path: Path, schema_only: bool = False) -> Any:
    """A Parquet, Feather or Arrow IPC (file or stream) table, or only its schema."""
    pa = _pyarrow(path)
    kind = ARROW_FORMATS[path.suffix.lower()]
    try:
        if kind == "Parquet":
            return (pa.parquet.read_schema if schema_only else pa.parquet.read_table)(path)
        try:
            if schema_only:
                with pa.ipc.open_file(path) as reader:
                    return reader.schema
            return pa.feather.read_table(path)
        except pa.ArrowInvalid:  # an IPC stream, or (schema only) a Feather V1 file
            if schema_only and not path.read_bytes().startswith(b"\xff\xff\xff\xff"):
                return pa.feather.read_table(path).schema
            with pa.ipc.open_stream(path) as stream:
                return stream.schema if schema_only else stream.read_all()
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a readable {kind} file ({error})") from None


def _data_columns(schema: Any) -> list[int]:
    """The positions of a schema's data columns: a pandas index stored beside them
    (``__index_level_0__``) is no column."""
    meta = schema.pandas_metadata or {}
    index = {c for c in meta.get("index_columns", []) if isinstance(c, str)}
    return [j for j, name in enumerate(schema.names) if name not in index]


def _arrow_kind(pa: Any, kind: Any) -> str | None:
    """What an Arrow column of type ``kind`` holds, if not numbers (None: numbers)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or str(kind) == "string_view":
        return "text"
    if pa.types.is_boolean(kind):
        return "true/false values"
    if pa.types.is_temporal(kind):
        return "dates or times"
    numeric = pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_null
    return None if any(test(kind) for test in numeric) else f"{kind} values"


def _read_arrow(
    path: Path, usecols: Sequence[int] | None, columns: int | None
) -> tuple[NDArray, NDArray]:
    """The numbers of the columns ``usecols`` (None: all) of a Parquet or Feather file, and the
    rows' numbers; a null is NaN. Text, categorical, boolean and date columns are refused, all
    in one message."""
    pa = _pyarrow(path)
    table = _arrow_read(path)
    data = _data_columns(table.schema)
    _check_width(path, len(data), columns)
    picked = [data[j] for j in (range(len(data)) if usecols is None else usecols)]
    kinds = {j: _arrow_kind(pa, table.schema.field(j).type) for j in picked}
    foreign = [j for j in picked if kinds[j] is not None]
    if foreign:
        what = " and ".join(dict.fromkeys(k for k in kinds.values() if k is not None))
        first = table.column(foreign[0])
        row = pa.compute.index(first.is_valid(), True).as_py()
        value = first[row].as_py() if row >= 0 else None
        shown = repr(value) if isinstance(value, str) else str(value)
        example = f"e.g. {shown} in row {row + 1}" if row >= 0 else "every value is null"
        raise _not_numbers(path, [table.column_names[j] for j in foreign], what, example)
    x = np.empty((table.num_rows, len(picked)))
    for i, j in enumerate(picked):
        column = table.column(j).cast(pa.float64(), safe=False)
        x[:, i] = column.to_numpy(zero_copy_only=False)
    return x, np.arange(1, len(x) + 1)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a table file (CSV, Parquet, .npy, ...)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")


def load_table(
    path: str | Path,
    drop_nonfinite: bool = False,
    min_rows: int = 1,
    columns: int | None = None,
    representable: Callable[[NDArray], NDArray] | None = None,
    usecols: Sequence[int] | None = None,
) -> NDArray:
    """Read a numeric table: a CSV file (header optional), a Parquet (.parquet, .pq) or
    Feather/Arrow IPC (.feather, .arrow, .ipc) file (with pyarrow, ``realnvp[tables]``), or a
    .npy/.npz array. (N, D) float64.

    Columns of text (strings, categoricals, booleans, dates; in a CSV, a column where most
    non-empty cells are not numbers) are refused all at once, unless ``usecols`` leaves them out.

    Args:
        drop_nonfinite: skip rows holding NaN or inf (a Parquet null is NaN) instead of refusing.
        min_rows: the fewest rows the caller can use.
        columns: the number of columns the caller expects the file to have.
        representable: maps the table to a boolean array of its shape, False where a value is
            finite in the file but out of the range the caller computes in (a float32 model).
        usecols: the file's columns to read, 0-based, in this order (None: all).

    Raises:
        DataError: with a message naming the file, and the row and column where it applies.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in NUMPY_SUFFIXES:
        x = _read_numpy(path)
        _check_width(path, x.shape[1], columns)
        x = x if usecols is None else x[:, list(usecols)]
        lines = np.arange(1, len(x) + 1)
    elif suffix in ARROW_FORMATS:
        x, lines = _read_arrow(path, usecols, columns)
    else:
        x, lines = _read_csv(path, usecols, columns)
    picked = list(range(x.shape[1])) if usecols is None else list(usecols)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        if not drop_nonfinite:
            row = int(np.argmax(bad))
            col = int(np.argmax(~np.isfinite(x[row])))
            raise DataError(
                f"{path}: row {lines[row]}, column {picked[col] + 1} is {x[row, col]}; "
                f"pass --drop-nonfinite to skip rows with NaN or inf ({int(bad.sum())} such rows)"
            )
        x, lines = x[~bad], lines[~bad]
    check_representable(x, representable, path, lines, picked)
    if len(x) < min_rows:
        raise DataError(
            f"{path}: has {len(x)} usable row{'s' * (len(x) != 1)}, at least {min_rows} needed"
        )
    if math.prod(x.shape) == 0:
        raise DataError(f"{path}: has no values")
    return x


def check_representable(
    x: NDArray,
    representable: Callable[[NDArray], NDArray] | None,
    source: str | Path,
    lines: NDArray | None = None,
    picked: Sequence[int] | None = None,
) -> None:
    """Refuse, naming row and column (``picked``: the file's column of each of x's), the first
    value that ``representable`` rejects."""
    if representable is None or len(x) == 0:
        return
    bad = ~np.asarray(representable(x), dtype=bool)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        line = row + 1 if lines is None else int(lines[row])
        number = col + 1 if picked is None else picked[col] + 1
        raise DataError(
            f"{source}: row {line}, column {number}: {x[row, col]:g} is out of the range the "
            f"model computes in (it overflows float32); {int(bad.any(axis=1).sum())} such rows"
        )


def table_header(path: str | Path) -> tuple[list[str] | None, int]:
    """A table file's column names (None when it has none: a CSV without a header, a NumPy
    file) and its number of columns, checked as ``load_table`` checks the file."""
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:  # the shape alone, from the file's header
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (ValueError, OSError, EOFError):
            shape = ()  # _read_numpy says what is wrong
        if len(shape) in (1, 2):
            return None, shape[1] if len(shape) == 2 else 1
    if suffix in NUMPY_SUFFIXES:
        return None, _read_numpy(path).shape[1]
    if suffix in ARROW_FORMATS:
        schema = _arrow_read(path, schema_only=True)
        columns = _data_columns(schema)
        return [schema.names[j] for j in columns], len(columns)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = _csv_rows(f)
        _, first = next(rows, (0, None))
        if first is None:
            raise DataError(f"{path}: the file has no rows")
        if not is_header(first):
            return None, len(first)
        _, data = next(rows, (0, first))
    return [c.strip() for c in first], len(data)


def column_names(path: str | Path) -> list[str] | None:
    """The column names of a table file: a CSV file's header row, a Parquet or Feather file's
    schema; None when it has none (a NumPy file, a CSV without a header, no file at all)."""
    path = Path(path)
    if path.suffix.lower() in NUMPY_SUFFIXES or not path.is_file() or path.stat().st_size == 0:
        return None
    return table_header(path)[0]


def resolve_columns(
    spec: str, names: list[str] | None, width: int, source: str | Path
) -> list[int]:
    """The 0-based indices of the columns that ``spec`` lists, comma-separated: names from the
    header, or numbers counting from 1 (as the error messages count columns).

    Examples:
        >>> resolve_columns("c, 1", ["a", "b", "c"], 3, "t.csv")
        [2, 0]
    """
    items = [s.strip() for s in spec.split(",")]
    if not spec.strip() or not all(items):
        raise DataError(f"{source}: no column named in {spec!r}; list names or numbers, e.g. a,b")
    out: list[int] = []
    for item in items:
        if names is not None and item in names:
            out.append(names.index(item))
        elif item.isdigit() and 1 <= int(item) <= width:
            out.append(int(item) - 1)
        else:
            known = f"its columns are {', '.join(names)}" if names else f"it has {width} columns"
            raise DataError(f"{source}: no column {item!r} ({known}, or numbers 1 to {width})")
    if len(set(out)) != len(out):
        raise DataError(f"{source}: a column is named twice in {spec!r}")
    return out
