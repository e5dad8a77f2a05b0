"""Rational-quadratic spline couplings (Durkan et al. 2019, "Neural Spline Flows").

Each transformed feature goes through its own monotonic rational-quadratic spline of ``K`` bins
on ``[-B, B]``, with the identity outside it (linear tails): the spline meets the tails with
slope 1, so the map and its derivative are continuous everywhere, and values beyond ``B`` pass
through unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from realnvp.bijections.coupling import Conditioner, _Coupling
from realnvp.errors import ConfigError

#: the smallest bin width and height (as a fraction of ``2B``) and the smallest derivative
MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3
#: softplus(DERIVATIVE_SHIFT) + MIN_DERIVATIVE == 1, so a raw derivative of 0 is a slope of 1
DERIVATIVE_SHIFT = math.log(math.expm1(1 - MIN_DERIVATIVE))


def _knots(raw: Tensor, bound: float) -> Tensor:
    """The ``K + 1`` knot positions on ``[-bound, bound]`` from ``K`` raw bin sizes (..., K);
    each bin at least ``MIN_BIN * 2 * bound`` wide, the ends exactly at ``-bound`` and ``bound``."""
    k = raw.shape[-1]
    sizes = MIN_BIN + (1 - MIN_BIN * k) * torch.softmax(raw, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))  # (..., K) -> (..., K + 1)
    knots = 2 * bound * knots - bound
    knots[..., 0], knots[..., -1] = -bound, bound  # no rounding at the ends: the tails meet
    return knots


def _derivatives(raw: Tensor) -> Tensor:
    """The ``K + 1`` knot derivatives from ``K - 1`` raw interior ones (..., K - 1): positive,
    at least ``MIN_DERIVATIVE``, 1 for a raw 0, and 1 at both ends to match the linear tails."""
    inner = MIN_DERIVATIVE + F.softplus(raw + DERIVATIVE_SHIFT)
    return F.pad(inner, (1, 1), value=1.0)


def _gather(t: Tensor, index: Tensor) -> Tensor:
    """``t[..., index]`` per element: (..., K + 1) with index (...) -> (...)."""
    return t.gather(-1, index.unsqueeze(-1)).squeeze(-1)


def rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    inverse: bool = False,
) -> tuple[Tensor, Tensor]:
    """A monotonic rational-quadratic spline on ``[-bound, bound]``, the identity outside it,
    applied elementwise (Durkan et al. 2019, eq. 4-8).

    In bin ``k``, with ``xi = (x - x_k) / w_k`` in [0, 1], slope ``s = h_k / w_k`` and knot
    derivatives ``d_k``, ``d_{k+1}``:
    ``y = y_k + h_k (s xi^2 + d_k xi (1 - xi)) / (s + (d_{k+1} + d_k - 2 s) xi (1 - xi))``.
    The inverse solves that quadratic in ``xi`` by the numerically stable root.

    Args:
        x: the values, any shape ``(...)``.
        widths: raw bin widths ``(..., K)``, normalised here by a softmax.
        heights: raw bin heights ``(..., K)``, likewise.
        derivatives: raw interior knot derivatives ``(..., K - 1)``, made positive by a softplus;
            all zero with equal widths and heights gives the identity.
        bound: B, the spline's half-width.
        inverse: apply the inverse map instead.

    Returns:
        ``(y, log|dy/dx|)``, both shaped like ``x``: the log-derivative of the map applied
        (of the inverse when ``inverse``), 0 in the tails.

    Examples:
        >>> x = torch.tensor([-6.0, 0.5, 6.0])
        >>> y, ld = rational_quadratic_spline(x, torch.zeros(3, 4), torch.zeros(3, 4),
        ...                                   torch.zeros(3, 3), bound=5.0)
        >>> torch.allclose(y, x), torch.allclose(ld, torch.zeros(3), atol=1e-6)
        (True, True)
    """
    xs, ys = _knots(widths, bound), _knots(heights, bound)
    d = _derivatives(derivatives)
    inside = (x >= -bound) & (x <= bound)
    v = x.clamp(-bound, bound)  # tails computed on the clamped value, then discarded
    knots = ys if inverse else xs
    k = torch.searchsorted(knots, v.unsqueeze(-1).contiguous(), right=True).squeeze(-1) - 1
    k = k.clamp(0, widths.shape[-1] - 1)  # v == bound belongs to the last bin
    x0, y0 = _gather(xs, k), _gather(ys, k)
    w, h = _gather(xs, k + 1) - x0, _gather(ys, k + 1) - y0
    d0, d1 = _gather(d, k), _gather(d, k + 1)
    s = h / w
    xi = _inverse_position(v - y0, h, s, d0, d1) if inverse else (v - x0) / w
    t = xi * (1 - xi)
    denominator = s + (d0 + d1 - 2 * s) * t
    out = x0 + xi * w if inverse else y0 + h * (s * xi**2 + d0 * t) / denominator
    # log dy/dx = log(s^2 (d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2)) - 2 log(denominator)
    log_det = torch.log(s**2 * (d1 * xi**2 + 2 * s * t + d0 * (1 - xi) ** 2))
    log_det = log_det - 2 * torch.log(denominator)
    log_det = -log_det if inverse else log_det
    return torch.where(inside, out, x), torch.where(inside, log_det, torch.zeros_like(x))


def _inverse_position(dy: Tensor, h: Tensor, s: Tensor, d0: Tensor, d1: Tensor) -> Tensor:
    """The position ``xi`` in [0, 1] within its bin of the value ``dy`` above the bin's lower
    knot: the numerically stable root of the spline's quadratic ``a xi^2 + b xi + c = 0``."""
    a = h * (s - d0) + dy * (d0 + d1 - 2 * s)
    b = h * d0 - dy * (d0 + d1 - 2 * s)
    c = -s * dy
    root = torch.sqrt((b * b - 4 * a * c).clamp(min=0))
    return 2 * c / (-b - root)


class SplineCoupling(_Coupling):
    """A coupling whose transformed features each go through a rational-quadratic spline
    (see ``rational_quadratic_spline``) that the kept features parametrise:
    ``z[rest] = RQS(x[rest]; theta(x[keep]))``, ``log|det dz/dx| = sum log RQS'(x[rest])``.

    For vectors only (a 1-D mask). The conditioner returns ``3K - 1`` numbers per transformed
    feature, ``(B, D_rest * (3K - 1))``: per feature ``K`` raw widths, ``K`` raw heights and
    ``K - 1`` raw interior derivatives. Zero-initialise its last layer (``MLP`` does) and every
    bin is ``2B / K`` wide and high with derivative 1: the layer starts as the identity, up to
    rounding.

    Args:
        mask: boolean ``(D,)``, True for the features kept and conditioned on.
        conditioner: the network computing the spline parameters from the kept features, or a
            factory that builds it from its input and output sizes (see ``_Coupling``).
        bins: K, the number of bins.
        bound: B, the spline covers ``[-B, B]``; the identity beyond (the data are standardized).
        context_features: the size of the context the conditioner also sees (0: none).

    Examples:
        >>> from realnvp.nn import MLP
        >>> layer = SplineCoupling(torch.tensor([True, False]), lambda i, o: MLP(i, o, 16, 2))
        >>> x = torch.randn(5, 2)
        >>> z, log_det = layer(x)
        >>> torch.allclose(z, x, atol=1e-5), log_det.shape
        (True, torch.Size([5]))
    """

    def __init__(
        self,
        mask: Tensor,
        conditioner: Conditioner,
        bins: int = 8,
        bound: float = 5.0,
        context_features: int = 0,
    ):
        if torch.as_tensor(mask).dim() != 1:
            raise ConfigError("takes a 1-D mask (vectors); images need another coupling", "mask")
        if not 2 <= bins < 1 / MIN_BIN:  # each bin takes at least MIN_BIN of the width
            raise ConfigError(f"must be from 2 to {round(1 / MIN_BIN) - 1}, got {bins}", "bins")
        if not bound > 0:
            raise ConfigError(f"must be positive, got {bound}", "bound")
        self.params_per_feature = 3 * bins - 1  # the base sizes the conditioner with it
        super().__init__(mask, conditioner, context_features)
        self.bins = bins
        self.bound = float(bound)

    def _spline(
        self, keep: Tensor, rest: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        # (B, D_rest * (3K - 1)) -> (B, D_rest, 3K - 1)
        h = self.conditioner(self._conditioner_input(keep, context))
        h = h.reshape(rest.shape[0], rest.shape[1], self.params_per_feature)
        widths, heights, derivatives = h.split([self.bins, self.bins, self.bins - 1], dim=-1)
        return rational_quadratic_spline(
            rest, widths, heights, derivatives, self.bound, inverse=inverse
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keep, rest = self._split(x)
        rest, log_det = self._spline(keep, rest, context, inverse=False)
        return self._merge(keep, rest), self._log_det(log_det)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keep, rest = self._split(z)
        rest, log_det = self._spline(keep, rest, context, inverse=True)
        return self._merge(keep, rest), self._log_det(log_det)
