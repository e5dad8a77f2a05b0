"""The exact two-moons density: quadrature against scipy, normalisation, and sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from realnvp.data.moons import centre_curves, moons, moons_log_density


def quad_density(point: np.ndarray, noise: float) -> float:
    def integrand(t: float, moon: int) -> float:
        c = centre_curves(np.array([t]))[moon][0]
        sq = float(((point - c) ** 2).sum())
        return math.exp(-sq / (2 * noise**2)) / (2 * math.pi * noise**2)

    total = 0.0
    for moon in (0, 1):
        value, _ = integrate.quad(
            integrand, 0, math.pi, args=(moon,), epsabs=0, epsrel=1e-12, limit=500
        )
        total += value / (2 * math.pi)
    return total


POINTS = [
    (0.0, 1.0),
    (1.0, 0.0),
    (0.5, 0.25),
    (-1.02, 0.05),
    (2.0, 0.45),
    (1.0, -0.6),
    (0.3, 0.8),
    (1.5, -0.35),
]


@pytest.mark.parametrize("noise", [0.05, 0.1, 0.2])
@pytest.mark.parametrize("point", POINTS)
def test_quadrature_matches_scipy_quad(point: tuple[float, float], noise: float) -> None:
    expected = quad_density(np.array(point), noise)
    got = math.exp(moons_log_density(np.array([point]), noise)[0])
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.05, 0.1])
def test_density_integrates_to_one(noise: float) -> None:
    # A grid step of noise / 5 or finer: the trapezoid rule is then exact to ~1e-6 here.
    step = noise / 5
    gx = np.arange(-1.0 - 8 * noise, 2.0 + 8 * noise, step)
    gy = np.arange(-0.5 - 8 * noise, 1.0 + 8 * noise, step)
    xx, yy = np.meshgrid(gx, gy, indexing="ij")
    p = np.exp(moons_log_density(np.stack([xx.ravel(), yy.ravel()], 1), noise)).reshape(xx.shape)
    mass = np.trapezoid(np.trapezoid(p, gy, axis=1), gx)
    assert mass == pytest.approx(1.0, abs=1e-3)


def test_per_moon_terms_add_up_and_favour_the_right_moon() -> None:
    x, y = moons(2000, noise=0.05, seed=3)
    joint = moons_log_density(x, 0.05, per_moon=True)
    assert np.allclose(np.logaddexp(joint[:, 0], joint[:, 1]), moons_log_density(x, 0.05))
    assert (np.argmax(joint, 1) == y).mean() > 0.99


def test_true_density_beats_a_wrong_noise_on_samples() -> None:
    x, _ = moons(5000, noise=0.05, seed=4)
    right = -moons_log_density(x, 0.05).mean()
    assert right < -moons_log_density(x, 0.07).mean()
    assert right < -moons_log_density(x, 0.04).mean()


@pytest.mark.parametrize(("x", "noise"), [(np.zeros((3, 3)), 0.05), (np.zeros((3, 2)), 0.0)])
def test_bad_input_is_refused(x: np.ndarray, noise: float) -> None:
    with pytest.raises(ValueError):
        moons_log_density(x, noise)
