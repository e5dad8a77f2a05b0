"""Real NVP for vectors: the table kind of model."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from realnvp.bijections import (
    AdditiveCoupling,
    AffineCoupling,
    Bijection,
    Compose,
    SplineCoupling,
    Standardize,
    alternating_masks,
    half_mask,
)
from realnvp.bijections.coupling import MAX_SCALE, SCALE_INIT, Conditioner
from realnvp.bijections.masks import validate_mask
from realnvp.distributions import StandardNormal
from realnvp.errors import ConfigError
from realnvp.models.flow import Flow
from realnvp.nn import ACTIVATION, MLP


def _dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in ("bfloat16", "float16"):
        raise ConfigError(
            f"must be 'bfloat16', 'float16' or None, got {value!r}", "conditioner_dtype"
        )
    return getattr(torch, value)


class RealNVP(Flow):
    """Real NVP for vectors: ``num_layers`` couplings with alternating masks over a standard normal.

    Each coupling has its own MLP conditioner that yields the log-scale and the shift together.

    Args:
        features: dimension D of the data (at least 2).
        num_layers: number of coupling layers.
        hidden_features: width of each conditioner's hidden layers.
        num_hidden_layers: depth of each conditioner.
        activation: the conditioners' nonlinearity (see ``realnvp.nn.ACTIVATIONS``).
        coupling: ``"affine"`` (Real NVP), ``"additive"`` (NICE) or ``"spline"`` (monotonic
            rational-quadratic splines, Durkan et al. 2019; see ``SplineCoupling``).
        mask: the first layer's mask (True = passed through); later layers alternate it with its
            complement. Default: pass the first ``ceil(D/2)`` features through.
        standardize: put a fixed ``Standardize`` first, set from data by
            ``set_standardization``, so the flow trains on standardized values and ``log_prob``
            is a density in the data's own units.
        scale_init: initial bound of each affine coupling's log-scale.
        max_scale: cap on each affine coupling's log-scale, ``|s| <= max_scale`` (see
            ``AffineCoupling``; None: no cap).
        conditioner_dtype: ``"bfloat16"`` runs the conditioners' hidden and output layers in
            mixed precision (bf16 matrix multiplies; the coupling arithmetic and log-det stay in
            the model's dtype): faster on CPUs with AVX-512 BF16 and on GPUs. Each coupling is
            still exactly invertible and its log-det exact; see ``MLP`` for the round trip.
        context_features: C, the size of a context ``c`` for a conditional flow ``p(x | c)``
            (0: unconditional). Every conditioner sees the kept features and the embedded
            context; ``log_prob(x, c)``, ``sample(n, c)``, ``encode(x, c)``, ``decode(z, c)``.
            With ``standardize``, the context is standardized too (``set_standardization``).
        context_net: the embedding of the (standardized) context, any module from (B, C) to
            (B, E), shared by all layers and trained with them (None: the context as it is). Its
            output size E is found by running it once on zeros. A custom net is not part of the
            saved config: rebuild the flow with it in Python, then load the weights.
        bins: K, the bins of each spline coupling's splines (``coupling="spline"`` only).
        tail_bound: B, each spline covers ``[-B, B]`` and is the identity beyond
            (``coupling="spline"`` only; the standardized data mostly lie inside).

    Example:
        >>> flow = RealNVP(features=2, num_layers=8, hidden_features=128, num_hidden_layers=2)
        >>> x = flow.sample(4)
        >>> flow.log_prob(x).shape, torch.allclose(flow.decode(flow.encode(x)), x)
        (torch.Size([4]), True)

        A conditional flow, ``p(x | c)`` with x in 2-D and c in 3-D:

        >>> flow = RealNVP(features=2, num_layers=4, context_features=3)
        >>> c = torch.randn(5, 3)
        >>> flow.log_prob(torch.randn(5, 2), c).shape, flow.sample(10, c).shape
        (torch.Size([5]), torch.Size([10, 5, 2]))
    """

    kind = "realnvp"
    nll_units: ClassVar[str] = "nats per row, in the data's own units"

    def __init__(
        self,
        features: int,
        num_layers: int = 8,
        hidden_features: int = 128,
        num_hidden_layers: int = 2,
        activation: str = ACTIVATION,
        coupling: str = "affine",
        mask: Tensor | list[bool] | None = None,
        standardize: bool = False,
        scale_init: float = SCALE_INIT,
        conditioner_dtype: str | torch.dtype | None = None,
        max_scale: float | None = MAX_SCALE,
        context_features: int = 0,
        context_net: nn.Module | None = None,
        bins: int = 8,
        tail_bound: float = 5.0,
    ):
        if features < 2:
            raise ConfigError(f"Real NVP needs at least 2 to couple, got {features}", "features")
        if num_layers < 1:
            raise ConfigError(f"must be at least 1, got {num_layers}", "num_layers")
        if coupling not in ("affine", "additive", "spline"):
            raise ConfigError(
                f"must be 'affine', 'additive' or 'spline', got {coupling!r}", "coupling"
            )
        embedded = _embedding_features(context_features, context_net)
        dtype = _dtype(conditioner_dtype)
        first = half_mask(features) if mask is None else validate_mask(torch.as_tensor(mask))
        if first.shape != (features,):
            raise ConfigError(f"must have shape ({features},), got {tuple(first.shape)}", "mask")

        def conditioner(in_features: int, out_features: int) -> MLP:
            sizes = (in_features, out_features, hidden_features, num_hidden_layers)
            return MLP(*sizes, activation, compute_dtype=dtype)

        layers: list[Bijection] = []
        if standardize:
            layers.append(Standardize(torch.zeros(features), torch.ones(features)))
        options = {"affine": (scale_init, max_scale), "spline": (bins, tail_bound)}
        for m in alternating_masks(first, num_layers):
            layers.append(_coupling(m, conditioner, coupling, options.get(coupling, ()), embedded))
        context_shape = (context_features,) if context_features else None
        super().__init__(Compose(layers), StandardNormal(features), context_shape, context_net)
        c = context_features
        self.context_standardize = (
            Standardize(torch.zeros(c), torch.ones(c)) if standardize and c else None
        )
        self.config = {
            "features": features,
            "num_layers": num_layers,
            "hidden_features": hidden_features,
            "num_hidden_layers": num_hidden_layers,
            "activation": activation,
            "coupling": coupling,
            "mask": first.tolist(),
            "standardize": standardize,
            "scale_init": scale_init,
            "conditioner_dtype": None if dtype is None else str(dtype).removeprefix("torch."),
            "max_scale": max_scale,
        }
        # only for a conditional flow, so configs of unconditional flows are as before
        self.config.update({"context_features": c} if c else {})
        self.config.update({"context_net": "custom"} if context_net is not None else {})
        # only for splines, so configs of affine and additive flows are as before
        self.config.update({"bins": bins, "tail_bound": tail_bound} if coupling == "spline" else {})

    @classmethod
    def for_data(cls, x_train: NDArray, context: NDArray | None = None, **options: Any) -> RealNVP:
        """A RealNVP for the rows of ``x_train`` (N, D) that standardizes them with their mean
        and std (a constant column gets std 1), so it trains on standardized values and reports
        densities in the data's own units. With ``context`` (N, C), the rows' contexts, the flow
        is conditional, ``p(x | c)``, and standardizes the contexts the same way.

        The statistics are computed in float64 and kept so (see ``Standardize``); the flow takes
        float64 data (``as_input``, ``as_context``), so columns with large offsets keep their
        digits."""
        x_train = np.asarray(x_train, dtype=np.float64)
        sizes = {"features": x_train.shape[1], "standardize": True}
        if context is not None:
            context = np.asarray(context, dtype=np.float64)
            sizes["context_features"] = context.shape[1]
        flow = cls(**{**options, **sizes})
        stats = [_moments(x_train)] + ([] if context is None else [_moments(context)])
        flow.set_standardization(*[t for pair in stats for t in pair])
        return flow

    @property
    def couplings(self) -> list[Bijection]:
        """The coupling layers, without the standardization."""
        return [b for b in self.transform.layers if not isinstance(b, Standardize)]

    @property
    def input_dtype(self) -> torch.dtype:
        """float64 when the flow standardizes (it does so in float64), else its own dtype."""
        return torch.float64 if isinstance(self.transform[0], Standardize) else self.dtype

    @property
    def context_dtype(self) -> torch.dtype:
        """float64 when the flow standardizes (contexts too), else its own dtype."""
        return self.input_dtype

    def embed(self, context: Tensor) -> Tensor:
        """The context, standardized (in float64) when the flow standardizes, through
        ``context_net``: (B, C) -> (B, E)."""
        if self.context_standardize is not None:
            context = self.context_standardize(context)[0]
        return super().embed(context)

    def context_mismatch(self, context: NDArray) -> str | None:
        """Contexts of another width than ``context_features``, or a value that is not
        finite (named by row and column)."""
        if self.context_shape is not None and np.ndim(context) == 2:
            bad = ~np.isfinite(np.asarray(context, dtype=np.float64))
            if bad.any():
                row, col = np.argwhere(bad)[0]
                return f"context row {row + 1}, column {col + 1} is {context[row][col]}, not finite"
        return super().context_mismatch(context)

    def in_range(self, x: Tensor) -> Tensor:
        """Which values of the data ``x`` (N, D) the flow can take: False where a value,
        after the standardization if there is one, overflows the flow's dtype (a ``1e300`` that
        float64 holds but float32 cannot). Same shape as ``x``."""
        x = x.to(torch.float64)
        first = self.transform[0]
        if isinstance(first, Standardize):
            x = (x - first.mean.to(x.device)) / first.std.to(x.device)
        return x.abs() <= torch.finfo(self.dtype).max

    def set_standardization(
        self,
        mean: Tensor,
        std: Tensor,
        context_mean: Tensor | None = None,
        context_std: Tensor | None = None,
    ) -> None:
        """Set the data mean and std that the first layer removes (needs ``standardize=True``),
        and for a conditional flow the contexts' mean and std."""
        first = self.transform[0]
        if not isinstance(first, Standardize):
            raise ConfigError("this flow was built with standardize=False")
        first.set_statistics(mean, std)
        if context_mean is not None and self.context_standardize is not None:
            self.context_standardize.set_statistics(context_mean, context_std)


def _coupling(
    mask: Tensor, conditioner: Conditioner, coupling: str, options: tuple[Any, ...], c: int
) -> Bijection:
    """The coupling called ``coupling``, with its own ``options``: ``(scale_init, max_scale)``
    for ``"affine"``, ``(bins, tail_bound)`` for ``"spline"``, none for ``"additive"``."""
    if coupling == "affine":
        return AffineCoupling(mask, conditioner, *options, context_features=c)
    if coupling == "spline":
        return SplineCoupling(mask, conditioner, *options, context_features=c)
    return AdditiveCoupling(mask, conditioner, c)


def _moments(x: NDArray) -> tuple[Tensor, Tensor]:
    """Each column's mean and std, in float64 (a constant column gets std 1)."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused by Standardize
        std = x.std(0)
    return torch.as_tensor(x.mean(0)), torch.as_tensor(np.where(std > 0, std, 1.0))


def _embedding_features(context_features: int, context_net: nn.Module | None) -> int:
    """E, the size of the embedded context the conditioners see: C, or what ``context_net``
    makes of a (2, C) batch of zeros."""
    if isinstance(context_net, str):
        raise ConfigError(
            "a custom context_net is not saved with the model; build the flow in Python with it "
            "(RealNVP(..., context_net=net)) and load the saved weights",
            "context_net",
        )
    if context_features < 0:
        raise ConfigError(f"must be at least 0, got {context_features}", "context_features")
    if context_net is None or not context_features:
        if context_net is not None:
            raise ConfigError("a context_net needs context_features > 0", "context_net")
        return context_features
    with torch.no_grad():
        out = context_net(torch.zeros(2, context_features))
    if out.dim() != 2 or out.shape[0] != 2:
        raise ConfigError(
            f"must map (B, {context_features}) to (B, E), gave {tuple(out.shape)} for B = 2",
            "context_net",
        )
    return out.shape[1]
