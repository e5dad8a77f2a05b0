"""Built-in 2-D toy data sets, by name, as used across the flow literature (FFJORD's set):
moons, circles, 8gaussians, pinwheel, 2spirals, checkerboard, rings."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import make_circles, make_moons

from realnvp.data.moons import NOISE


def _moons(n: int, rng: np.random.Generator) -> NDArray:
    return make_moons(n, noise=NOISE, random_state=int(rng.integers(2**31)))[0]


def _circles(n: int, rng: np.random.Generator) -> NDArray:
    return make_circles(n, noise=0.05, factor=0.5, random_state=int(rng.integers(2**31)))[0]


def _eight_gaussians(n: int, rng: np.random.Generator) -> NDArray:
    angles = rng.integers(0, 8, n) * (2 * math.pi / 8)
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return centres + 0.2 * rng.standard_normal((n, 2))


def _pinwheel(n: int, rng: np.random.Generator) -> NDArray:
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    arm = rng.integers(0, arms, n)
    feats = rng.standard_normal((n, 2)) * [radial_std, tangential_std]
    feats[:, 0] += 1.0
    angle = arm * (2 * math.pi / arms) + rate * np.exp(feats[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    return 2 * np.stack([c * feats[:, 0] - s * feats[:, 1], s * feats[:, 0] + c * feats[:, 1]], 1)


def _two_spirals(n: int, rng: np.random.Generator) -> NDArray:
    t = np.sqrt(rng.random(n)) * 3 * math.pi
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    x = sign[:, None] * np.stack([-np.cos(t) * t, np.sin(t) * t], 1) / 3
    return x + 0.1 * rng.standard_normal((n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> NDArray:
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2.0
    x2 = x2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2


def _rings(n: int, rng: np.random.Generator) -> NDArray:
    radius = rng.integers(1, 5, n).astype(float)
    angle = rng.random(n) * 2 * math.pi
    x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return x + 0.08 * rng.standard_normal((n, 2))


TOY_DATASETS: dict[str, Callable[[int, np.random.Generator], NDArray]] = {
    "moons": _moons,
    "circles": _circles,
    "8gaussians": _eight_gaussians,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
    "checkerboard": _checkerboard,
    "rings": _rings,
}


def toy_data(name: str, n: int, seed: int = 0) -> NDArray:
    """``n`` points of the built-in data set ``name``: (n, 2) float64.

    Examples:
        >>> toy_data("8gaussians", 4, seed=0).shape
        (4, 2)
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown data set {name!r}; built-in: {', '.join(TOY_DATASETS)}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return TOY_DATASETS[name](n, np.random.default_rng(seed)).astype(np.float64)
