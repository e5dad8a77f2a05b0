"""Rounded columns: finding a table's rounding steps, and dequantizing them.

A column of prices in whole dollars, of counts, or of lengths to one decimal holds only the
points of a grid, with ties. A continuous density can put arbitrarily large density on such
points, so its likelihood on them means nothing. Adding uniform noise over each value's rounding
cell, ``x + step * (u - 1/2)`` with ``u ~ U(0, 1)``, gives continuous data whose density ``q``
bounds the probability of the rounded values (Theis et al. 2016):

    log P(x) >= E_u[log q(x + step * (u - 1/2))] + sum_j log step_j

so a density fitted to dequantized rows is honest, and adding ``sum_j log step_j`` (nats per row)
turns its log-density into a bound on the rounded values' log-probability.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: the rounding steps tried, coarsest first: 10^k for k = 6 .. -6, and half and quarter steps
STEPS = tuple(m * 10.0**k for k in range(6, -7, -1) for m in (5.0, 2.5, 1.0))

#: a column is rounded when its values fit a grid and it has at most this share of distinct values
TIES = 0.95


def rounding_step(column: NDArray) -> float:
    """The step a column with ties (fewer distinct values than ``TIES`` times its rows) is
    rounded to, the coarser of: the coarsest of ``STEPS`` that every value is a whole multiple of
    (to float64 precision), and the smallest gap between its distinct values if every value lies
    on that grid (minutes recorded to the second and printed to 6 decimals: 1/60, not 1e-6);
    0 for a continuous column.

    Examples:
        >>> rounding_step(np.array([1.5, 2.0, 2.0, 3.5, 7.0]))
        0.5
        >>> rounding_step(np.array([0.1234, 2.718281, 3.14159]))
        0.0
        >>> round(1 / rounding_step(np.array([2.0, 2.0, 2.016667, 4.0, 4.0, 4.1])), 3)
        60.0
    """
    column = np.asarray(column, dtype=np.float64)
    values = np.unique(column)
    if len(values) > TIES * len(column) or len(values) < 2:
        return 0.0
    printed = _decimal_step(values)  # the grid the values are printed on, if any
    step = max(printed, _grid_step(values))
    # a cell is never wider than the smallest gap, give or take the printing's rounding
    return step if step <= _widest_cell(values) + printed else 0.0


def _widest_cell(values: NDArray) -> float:
    """The smallest gap between the sorted distinct ``values``, up to the rounding of their
    printing (a thousandth of it, as ``_grid_step`` allows) and of float64: a rounding cell
    is never wider."""
    return np.diff(values).min() * (1 + 1e-3) + 8 * np.spacing(np.abs(values).max())


def _decimal_step(values: NDArray) -> float:
    """The coarsest of ``STEPS`` that every value is a whole multiple of, else 0."""
    widest = _widest_cell(values)
    for step in STEPS:
        if step > widest:
            continue
        ratio = values / step
        # a value printed with a few decimals is a whole multiple of its step up to the
        # rounding of float64, a few ulps of the ratio (not more: at 1e9 a looser tolerance
        # would take whole seconds for multiples of 2.5)
        tol = 1e-12 * np.maximum(1.0, np.abs(ratio))
        if np.all(np.abs(ratio - np.round(ratio)) <= tol):
            return step
    return 0.0


def _grid_step(values: NDArray) -> float:
    """The smallest gap between the sorted distinct ``values``, refined by least squares, if
    every value lies within a thousandth of a cell of the grid it spans; else 0."""
    offsets = values - values[0]
    k = np.round(offsets / np.diff(values).min())
    if k[-1] > 1e6:  # too fine a grid to be a rounding
        return 0.0
    step = float(k @ offsets / (k @ k))
    return step if np.abs(offsets - k * step).max() <= 1e-3 * step else 0.0


def rounding_steps(x: NDArray) -> NDArray:
    """Each column's ``rounding_step``: (D,), 0 where a column is continuous."""
    x = np.asarray(x, dtype=np.float64)
    return np.array([rounding_step(x[:, j]) for j in range(x.shape[1])])


def dequantize(x: NDArray, steps: NDArray, rng: np.random.Generator) -> NDArray:
    """``x`` with uniform noise over each rounded column's cell, ``x + step * (u - 1/2)``;
    continuous columns (step 0) are left as they are.

    Examples:
        >>> x = np.array([[1.0, 0.123], [2.0, 0.456]])
        >>> y = dequantize(x, np.array([1.0, 0.0]), np.random.default_rng(0))
        >>> bool(np.all(np.abs(y - x)[:, 0] <= 0.5)), bool(np.all(y[:, 1] == x[:, 1]))
        (True, True)
    """
    steps = np.asarray(steps, dtype=np.float64)
    return x + steps * (rng.random(x.shape) - 0.5)
