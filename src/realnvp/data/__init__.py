"""Data sets: toy 2-D distributions, the exact two-moons density, and user tables."""

from realnvp.data.checks import check_density_table
from realnvp.data.moons import moons, moons_log_density
from realnvp.data.sources import load_data
from realnvp.data.tabular import DataError, load_table
from realnvp.data.toy import TOY_DATASETS, toy_data

__all__ = [
    "TOY_DATASETS",
    "DataError",
    "check_density_table",
    "load_data",
    "load_table",
    "moons",
    "moons_log_density",
    "toy_data",
]
