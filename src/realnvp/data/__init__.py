"""Data sets: toy 2-D distributions, the exact two-moons density, and user tables, in memory
or read where they lie (``Rows``)."""

from realnvp.data.checks import check_density_table
from realnvp.data.moons import moons, moons_log_density
from realnvp.data.order import Permutation
from realnvp.data.sources import load_data
from realnvp.data.store import ArrayRows, NpyRows, ParquetRows, Rows, open_rows
from realnvp.data.tabular import DataError, load_table
from realnvp.data.toy import TOY_DATASETS, toy_data

__all__ = [
    "TOY_DATASETS",
    "ArrayRows",
    "DataError",
    "NpyRows",
    "ParquetRows",
    "Permutation",
    "Rows",
    "check_density_table",
    "load_data",
    "load_table",
    "moons",
    "moons_log_density",
    "open_rows",
    "toy_data",
]
