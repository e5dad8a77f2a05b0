"""scikit-learn's two moons, and the exact density of the distribution it samples from.

``sklearn.datasets.make_moons`` places ``n // 2`` points on the outer half circle
``(cos t, sin t)`` and the rest on the inner one ``(1 - cos t, 1/2 - sin t)``, with ``t`` evenly
spaced on ``[0, pi]``, then adds isotropic Gaussian noise of standard deviation ``sigma``. As ``n``
grows, that is the mixture

    p(x) = 1/2 * (1/pi) int_0^pi N(x; c_out(t), sigma^2 I) dt
         + 1/2 * (1/pi) int_0^pi N(x; c_in(t),  sigma^2 I) dt,

whose entropy no model can beat on test NLL. The integral over the angle is computed by composite
Gauss-Legendre quadrature in float64 with a log-sum-exp over the nodes.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp
from sklearn.datasets import make_moons

#: scikit-learn's make_moons noise used by the toy set and the depth study
NOISE = 0.05


def moons(n: int, noise: float = NOISE, seed: int = 0) -> tuple[NDArray, NDArray]:
    """``n`` points of two moons and their moon (0 outer, 1 inner): (n, 2) float64, (n,) int."""
    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return x, y


def centre_curves(t: NDArray) -> tuple[NDArray, NDArray]:
    """The noise-free outer and inner moon at angles ``t``: two (len(t), 2) arrays."""
    outer = np.stack([np.cos(t), np.sin(t)], axis=-1)
    inner = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=-1)
    return outer, inner


def _nodes(panels: int, order: int) -> tuple[NDArray, NDArray]:
    """Composite Gauss-Legendre nodes and weights on [0, pi]."""
    u, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(0.0, math.pi, panels + 1)
    half = np.diff(edges) / 2
    mid = (edges[:-1] + edges[1:]) / 2
    t = (mid[:, None] + half[:, None] * u[None, :]).ravel()
    weights = (half[:, None] * w[None, :]).ravel()
    return t, weights


def moons_log_density(
    x: ArrayLike,
    noise: float = NOISE,
    panels: int = 128,
    order: int = 8,
    per_moon: bool = False,
    chunk: int = 2048,
) -> NDArray:
    """Exact log-density of the two-moons limit law at each row of ``x`` (raw coordinates).

    Args:
        x: points, shape (N, 2).
        noise: the ``noise`` argument of ``make_moons`` (standard deviation).
        panels: the number of panels of the composite Gauss-Legendre rule on [0, pi].
        order: the nodes per panel; with the default ``panels`` they agree with adaptive
            quadrature to about 1e-13 at noise 0.05.
        per_moon: return the joint log-density of the point and each moon, shape (N, 2)
            (outer, inner), whose log-sum-exp over the last axis is the density.

    Returns:
        ``log p(x)``, shape (N,), or (N, 2) with ``per_moon``.

    Examples:
        >>> round(float(moons_log_density([[0.0, 1.0]])[0]), 3)
        0.239
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (N, 2), got {x.shape}")
    if noise <= 0:
        raise ValueError(f"noise must be positive, got {noise}")
    t, w = _nodes(panels, order)
    curves = centre_curves(t)
    # log of (1/2)(1/pi) w_k N(x; c_k, noise^2 I), a 2-D Gaussian.
    log_w = np.log(w) - math.log(2 * math.pi) - math.log(2 * math.pi * noise**2)
    out = np.empty((len(x), 2))
    for start in range(0, len(x), chunk):
        xb = x[start : start + chunk, None, :]  # (n, 1, 2)
        for j, c in enumerate(curves):
            sq = ((xb - c[None]) ** 2).sum(-1)  # (n, K)
            out[start : start + chunk, j] = logsumexp(log_w - sq / (2 * noise**2), axis=1)
    return out if per_moon else np.logaddexp(out[:, 0], out[:, 1])
