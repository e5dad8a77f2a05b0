"""Coupling layers (Dinh et al. 2017, eq. 4-9): the kept features pass through and parametrise an
elementwise map of the others, so the Jacobian is triangular and its determinant is a sum.

One layer serves every event shape. With a 1-D mask the layer splits dimension 1 by index (a
vector's features, or an image's channels) and the conditioner sees only the kept ones and
computes parameters for only the others. With a mask of any other shape (images: checkerboard,
channel-wise) the conditioner sees ``x * mask`` in full, and its outputs are zeroed where the mask
is True, so the kept entries pass through exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from realnvp.bijections.base import Bijection, sum_except_batch
from realnvp.bijections.masks import validate_mask
from realnvp.errors import ConfigError

#: a conditioner, or a factory that builds one from its (input, output) sizes
Conditioner = nn.Module | Callable[[int, int], nn.Module]


class _Coupling(Bijection):
    """Split, condition and merge; subclasses supply the elementwise map of the rest.

    ``conditioner`` is a network, or a factory ``(in_size, out_size) -> network`` that the layer
    calls with the sizes it needs: for a 1-D mask ``in_size`` is the number of kept features (of
    channels, when the mask splits an image's channels) and ``out_size`` is
    ``params_per_feature`` times the number transformed; for an event-shaped mask they count
    channels (``C`` and ``params_per_feature * C``).

    A conditional layer (``context_features`` > 0) takes a context of that many features per
    batch element, ``(B, context_features)``, and its conditioner sees it beside the kept
    features: concatenated to them for vectors, as constant channels for images (either
    mask; ``in_size`` counts them). The kept features still pass through unchanged,
    so the layer is invertible, with the same log-det, for each context value."""

    #: how many tensors the conditioner yields per transformed feature (t; or log-scale and t)
    params_per_feature: int = 1

    conditioner: nn.Module
    mask: Tensor  # buffers; the three indices exist only for a 1-D mask
    keep_index: Tensor
    rest_index: Tensor
    merge_index: Tensor

    def __init__(self, mask: Tensor, conditioner: Conditioner, context_features: int = 0):
        super().__init__()
        mask = validate_mask(mask)
        if context_features < 0:
            raise ConfigError(f"must be at least 0, got {context_features}", "context_features")
        self.register_buffer("mask", mask)
        self.by_index = mask.dim() == 1
        self.context_features = context_features
        if not isinstance(conditioner, nn.Module):
            conditioner = conditioner(*self._conditioner_sizes(mask))
        self.conditioner = conditioner
        if self.by_index:
            keep = mask.nonzero().squeeze(1)
            rest = (~mask).nonzero().squeeze(1)
            self.register_buffer("keep_index", keep)
            self.register_buffer("rest_index", rest)
            # torch.cat([keep, rest]) then this permutation puts features back in place.
            self.register_buffer("merge_index", torch.argsort(torch.cat([keep, rest])))
            # Two contiguous halves (the usual case) are split by slicing, with no gather.
            n_keep = keep.numel()
            self.halves: tuple[int, int] | None = None
            if bool(mask[:n_keep].all()):
                self.halves = (0, n_keep)  # keep first
            elif bool(mask[-n_keep:].all()):
                self.halves = (1, mask.numel() - n_keep)  # keep last
        self.num_transformed = int((~mask).sum())

    def _conditioner_sizes(self, mask: Tensor) -> tuple[int, int]:
        c = self.context_features
        if self.by_index:
            return int(mask.sum()) + c, self.params_per_feature * int((~mask).sum())
        return mask.shape[0] + c, self.params_per_feature * mask.shape[0]

    # (B, D) -> (B, D_keep), (B, D_rest) for vectors; (B, *event) twice for masks.
    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.by_index:
            return x * self.mask, x
        if self.halves is not None:
            keep_last, cut = self.halves
            a, b = x[:, :cut], x[:, cut:]
            return (b, a) if keep_last else (a, b)
        return x.index_select(1, self.keep_index), x.index_select(1, self.rest_index)

    def _merge(self, keep: Tensor, rest: Tensor) -> Tensor:
        if not self.by_index:
            return rest  # the parameters are zero on kept entries, so rest == keep there
        if self.halves is not None:
            return torch.cat([rest, keep] if self.halves[0] else [keep, rest], dim=1)
        return torch.cat([keep, rest], dim=1).index_select(1, self.merge_index)

    def _conditioner_input(self, keep: Tensor, context: Tensor | None) -> Tensor:
        """The kept features, with the context beside them in a conditional layer."""
        if (context is None) != (self.context_features == 0):
            given = "no context" if context is None else "a context"
            raise ValueError(
                f"a coupling layer with context_features={self.context_features} got {given}"
            )
        if context is None:
            return keep
        if context.shape != (keep.shape[0], self.context_features):
            raise ValueError(
                f"context of shape {tuple(context.shape)}; this layer expects "
                f"({keep.shape[0]}, {self.context_features}), one row per batch element"
            )
        context = context.to(keep.dtype)
        if keep.dim() > 2:  # constant channels over the image
            context = context.reshape(*context.shape, *[1] * (keep.dim() - 2))
            context = context.expand(-1, -1, *keep.shape[2:])
        return torch.cat([keep, context], dim=1)

    def _params(self, keep: Tensor, context: Tensor | None = None) -> tuple[Tensor, ...]:
        h = self.conditioner(self._conditioner_input(keep, context))
        params = h.chunk(self.params_per_feature, dim=1)
        if not self.by_index:
            params = tuple(p.masked_fill(self.mask, 0.0) for p in params)
        return params

    def _log_det(self, s: Tensor) -> Tensor:
        return s.sum(dim=1) if s.dim() == 2 else sum_except_batch(s)


#: the default cap on an affine coupling's log-scale: a factor of at most e^5 ~ 148 per layer
MAX_SCALE = 5.0
#: the default initial bound of an affine coupling's log-scale
SCALE_INIT = 2.0


class AffineCoupling(_Coupling):
    """Real NVP affine coupling:
    ``z[keep] = x[keep]``, ``z[rest] = x[rest] * exp(s(x[keep])) + t(x[keep])``,
    ``log|det dz/dx| = sum(s)``.

    The conditioner returns ``(raw_s, t)`` concatenated along dimension 1: ``(B, 2 * D_rest)`` for
    a 1-D mask (``(B, 2 * C_rest, H, W)`` when it splits an image's channels), ``(B, 2 * C, ...)``
    for an event-shaped mask. The log-scale is bounded,
    ``s = scale * tanh(raw_s)``, with ``scale`` learned per feature (per channel for images), as in
    the paper's code. Zero-initialise the conditioner's last layer (``MLP`` does) and the layer
    starts as the identity; ``scale`` then starts at ``scale_init``, not at 0 as in the paper's
    code, because a zero scale and a zero last layer would leave each other without gradient.

    The bound is capped: ``s = clamp(scale, -max_scale, max_scale) * tanh(raw_s)``, so
    ``|s| <= max_scale`` whatever the training does (without the cap ``scale`` is a free
    parameter that can grow without limit, e.g. on a column of repeated values, until
    ``exp(s)`` overflows). The cap changes nothing while ``|scale| < max_scale``; the image
    recipe also puts an L2 penalty on ``scale`` (``TrainConfig.scale_l2``).

    Args:
        mask: boolean, True for the features kept and conditioned on; shape ``(D,)`` or the event
            shape.
        conditioner: the network computing ``(raw_s, t)`` from the kept features, or a factory
            that builds it from its input and output sizes (see ``_Coupling``).
        scale_init: initial bound on ``|s|`` per layer.
        max_scale: the cap on ``|s|`` (None: no cap).
        context_features: the size of the context the conditioner also sees (0: none).

    Examples:
        >>> import torch
        >>> from realnvp.nn import MLP
        >>> layer = AffineCoupling(torch.tensor([True, False]), lambda i, o: MLP(i, o, 16, 2))
        >>> z, log_det = layer(torch.randn(5, 2))
        >>> z.shape, log_det.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    params_per_feature = 2

    def __init__(
        self,
        mask: Tensor,
        conditioner: Conditioner,
        scale_init: float = SCALE_INIT,
        max_scale: float | None = MAX_SCALE,
        context_features: int = 0,
    ):
        super().__init__(mask, conditioner, context_features)
        if max_scale is not None and not max_scale > 0:
            raise ConfigError(f"must be positive or None, got {max_scale}", "max_scale")
        self.max_scale = max_scale
        if self.by_index:
            shape: tuple[int, ...] = (self.num_transformed,)
        else:
            shape = (self.mask.shape[0],) + (1,) * (self.mask.dim() - 1)
        self.scale = nn.Parameter(torch.full(shape, float(scale_init)))

    def l2_terms(self) -> list[Tensor]:
        """What the paper code's L2 penalizes here: the log-scale bound."""
        return [self.scale]

    def _scale_shift(self, keep: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raw_s, t = self._params(keep, context)
        bound = _capped(self.scale, self.max_scale)
        if self.by_index and raw_s.dim() > 2:  # a channel split of images: per channel
            bound = bound.reshape(-1, *[1] * (raw_s.dim() - 2))
        return bound * torch.tanh(raw_s), t  # tanh(0) = 0 where the mask keeps

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keep, rest = self._split(x)
        s, t = self._scale_shift(keep, context)
        return self._merge(keep, rest * torch.exp(s) + t), self._log_det(s)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keep, rest = self._split(z)
        s, t = self._scale_shift(keep, context)
        return self._merge(keep, (rest - t) * torch.exp(-s)), -self._log_det(s)


def _capped(scale: Tensor, max_scale: float | None) -> Tensor:
    return scale if max_scale is None else scale.clamp(-max_scale, max_scale)


class ContextAffine(Bijection):
    """An affine map of every feature whose shift and log-scale depend on the context alone:
    ``z = x * exp(s(c)) + t(c)``, ``log|det dz/dx| = sum(s(c))``, with ``s`` bounded as in
    ``AffineCoupling`` (``s = clamp(scale, -max_scale, max_scale) * tanh(raw_s)``).

    It moves and rescales each feature's conditional distribution to where the couplings after
    it work. Spline couplings need it: a spline covers ``[-B, B]`` of the standardized data and
    maps it onto itself, so it cannot undo a context that moves ``x`` or scales it far beyond
    ``B`` (e.g. ``x | c ~ N(0, e^{2c})``), while this layer can. With a zero-initialised last
    layer (``MLP``'s) it starts as the identity.

    Args:
        features: D, the size of ``x``.
        conditioner: the network from the (embedded) context, ``(B, C) -> (B, 2 D)`` giving
            ``(raw_s, t)``, or a factory ``(C, 2 D) -> network``.
        context_features: C, the size of the context it sees.
        scale_init: the log-scale's initial bound, as in ``AffineCoupling``.
        max_scale: the cap on the log-scale, as in ``AffineCoupling``.

    Examples:
        >>> import torch
        >>> from realnvp.nn import MLP
        >>> layer = ContextAffine(2, lambda i, o: MLP(i, o, 16, 2), context_features=3)
        >>> z, log_det = layer(torch.randn(5, 2), torch.randn(5, 3))
        >>> z.shape, log_det.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        features: int,
        conditioner: Conditioner,
        context_features: int,
        scale_init: float = SCALE_INIT,
        max_scale: float | None = MAX_SCALE,
    ):
        super().__init__()
        if features < 1 or context_features < 1:
            raise ConfigError(
                f"needs at least one feature and one context feature, got {features} and "
                f"{context_features}",
                "context_features",
            )
        if max_scale is not None and not max_scale > 0:
            raise ConfigError(f"must be positive or None, got {max_scale}", "max_scale")
        if not isinstance(conditioner, nn.Module):
            conditioner = conditioner(context_features, 2 * features)
        self.conditioner = conditioner
        self.features, self.context_features, self.max_scale = features, context_features, max_scale
        self.scale = nn.Parameter(torch.full((features,), float(scale_init)))

    def l2_terms(self) -> list[Tensor]:
        """The log-scale bound, as ``AffineCoupling`` reports it."""
        return [self.scale]

    def _scale_shift(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if context is None or context.shape != (x.shape[0], self.context_features):
            got = "no context" if context is None else f"a context of shape {tuple(context.shape)}"
            raise ValueError(
                f"ContextAffine expects a context of shape ({x.shape[0]}, "
                f"{self.context_features}), one row per batch element; got {got}"
            )
        raw_s, t = self.conditioner(context.to(x.dtype)).chunk(2, dim=1)
        return _capped(self.scale, self.max_scale) * torch.tanh(raw_s), t

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s, t = self._scale_shift(x, context)
        return x * torch.exp(s) + t, s.sum(dim=1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s, t = self._scale_shift(z, context)
        return (z - t) * torch.exp(-s), -s.sum(dim=1)


class AdditiveCoupling(_Coupling):
    """NICE additive coupling (Dinh et al. 2015): ``z[rest] = x[rest] + t(x[keep])``; volume
    preserving, so ``log_det = 0``. The conditioner returns ``t`` alone: ``(B, D_rest)`` or
    ``(B, C, ...)``.
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keep, rest = self._split(x)
        (t,) = self._params(keep, context)
        return self._merge(keep, rest + t), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keep, rest = self._split(z)
        (t,) = self._params(keep, context)
        return self._merge(keep, rest - t), z.new_zeros(z.shape[0])
