"""Reading a user's table (CSV, .npy, .npz) with errors that say what is wrong and where."""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
from numpy.typing import NDArray


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


def _read_csv(path: Path) -> tuple[NDArray, NDArray]:
    """The numbers and, for each, its line number in the file."""
    with open(path, newline="") as f:
        rows = list(_csv_rows(f))
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    _first_line, first = rows[0]
    if all(_parse_float(c.strip()) is None for c in first):
        rows = rows[1:]  # a header: no cell of it is a number
        if not rows:
            raise DataError(f"{path}: the file has a header but no data rows")
    width = len(rows[0][1])
    out = np.empty((len(rows), width))
    for k, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path}: row {line} has {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            value = _parse_float(cell.strip())
            if value is None:
                shown = repr(cell) if cell.strip() else "an empty cell"
                raise DataError(f"{path}: row {line}, column {j + 1}: {shown} is not a number")
            out[k, j] = value
    return out, np.array([line for line, _ in rows])


def _read_numpy(path: Path) -> NDArray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise DataError(
                f"{path}: holds Python objects (pickle); refused, only numbers load"
            ) from None
        raise DataError(f"{path}: not a readable NumPy file ({error})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable NumPy file ({error})") from None
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
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"{path}: expected real numbers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D table (rows, columns), got shape {array.shape}")
    return array.astype(np.float64)


def load_table(
    path: str | Path,
    drop_nonfinite: bool = False,
    min_rows: int = 1,
    columns: int | None = None,
    representable: Callable[[NDArray], NDArray] | None = None,
) -> NDArray:
    """Read a numeric table: a CSV file (header optional), or a .npy/.npz array. (N, D) float64.

    Args:
        drop_nonfinite: skip rows holding NaN or inf instead of refusing the file.
        min_rows: the fewest rows the caller can use.
        columns: the number of columns the caller expects (a trained model's features).
        representable: maps the table to a boolean array of its shape, False where a value is
            finite in the file but out of the range the caller computes in (a float32 model).

    Raises:
        DataError: with a message naming the file, and the row and column where it applies.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a CSV, .npy or .npz file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        x = _read_numpy(path)
        lines = np.arange(1, len(x) + 1)
    else:
        x, lines = _read_csv(path)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        if not drop_nonfinite:
            row = int(np.argmax(bad))
            col = int(np.argmax(~np.isfinite(x[row])))
            raise DataError(
                f"{path}: row {lines[row]}, column {col + 1} is {x[row, col]}; "
                f"pass --drop-nonfinite to skip rows with NaN or inf ({int(bad.sum())} such rows)"
            )
        x, lines = x[~bad], lines[~bad]
    if columns is not None and x.shape[1] != columns:
        raise DataError(f"{path}: has {x.shape[1]} columns, the model expects {columns}")
    check_representable(x, representable, path, lines)
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
) -> None:
    """Refuse, naming row and column, the first value that ``representable`` rejects."""
    if representable is None or len(x) == 0:
        return
    bad = ~np.asarray(representable(x), dtype=bool)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        line = row + 1 if lines is None else int(lines[row])
        raise DataError(
            f"{source}: row {line}, column {col + 1}: {x[row, col]:g} is out of the range the "
            f"model computes in (it overflows float32); {int(bad.any(axis=1).sum())} such rows"
        )


def column_names(path: str | Path) -> list[str] | None:
    """The names in a CSV file's header row, or None when it has none (or is a NumPy file)."""
    path = Path(path)
    if path.suffix.lower() in (".npy", ".npz") or not path.is_file():
        return None
    with open(path, newline="") as f:
        _, first = next(_csv_rows(f), (0, None))
    if first is None or any(_parse_float(c.strip()) is not None for c in first):
        return None
    return [c.strip() for c in first]


def resolve_columns(
    spec: str, names: list[str] | None, width: int, source: str | Path
) -> list[int]:
    """The 0-based indices of the columns that ``spec`` lists, comma-separated: names from the
    header, or numbers counting from 1 (as the error messages count columns).

    Example:
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
