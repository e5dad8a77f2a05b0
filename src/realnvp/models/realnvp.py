"""Real NVP for vectors: the table kind of model."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from realnvp.bijections import (
    AdditiveCoupling,
    AffineCoupling,
    Bijection,
    Compose,
    Standardize,
    alternating_masks,
    half_mask,
)
from realnvp.bijections.coupling import MAX_SCALE, SCALE_INIT
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
        coupling: ``"affine"`` (Real NVP) or ``"additive"`` (NICE).
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

    Example:
        >>> flow = RealNVP(features=2, num_layers=8, hidden_features=128, num_hidden_layers=2)
        >>> x = flow.sample(4)
        >>> flow.log_prob(x).shape, torch.allclose(flow.decode(flow.encode(x)), x)
        (torch.Size([4]), True)
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
    ):
        if features < 2:
            raise ConfigError(f"Real NVP needs at least 2 to couple, got {features}", "features")
        if num_layers < 1:
            raise ConfigError(f"must be at least 1, got {num_layers}", "num_layers")
        if coupling not in ("affine", "additive"):
            raise ConfigError(f"must be 'affine' or 'additive', got {coupling!r}", "coupling")
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
        for m in alternating_masks(first, num_layers):
            if coupling == "affine":
                layers.append(AffineCoupling(m, conditioner, scale_init, max_scale))
            else:
                layers.append(AdditiveCoupling(m, conditioner))
        super().__init__(Compose(layers), StandardNormal(features))
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

    @classmethod
    def for_data(cls, x_train: NDArray, **options: Any) -> RealNVP:
        """A RealNVP for the rows of ``x_train`` (N, D) that standardizes them with their mean
        and std (a constant column gets std 1), so it trains on standardized values and reports
        densities in the data's own units.

        The statistics are computed in float64 and kept so (see ``Standardize``); the flow takes
        float64 data (``as_input``), so columns with large offsets keep their digits."""
        x_train = np.asarray(x_train, dtype=np.float64)
        flow = cls(**{**options, "features": x_train.shape[1], "standardize": True})
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
            std = x_train.std(0)
        flow.set_standardization(
            torch.as_tensor(x_train.mean(0)), torch.as_tensor(np.where(std > 0, std, 1.0))
        )
        return flow

    @property
    def couplings(self) -> list[Bijection]:
        """The coupling layers, without the standardization."""
        return [b for b in self.transform.layers if not isinstance(b, Standardize)]

    @property
    def input_dtype(self) -> torch.dtype:
        """float64 when the flow standardizes (it does so in float64), else its own dtype."""
        return torch.float64 if isinstance(self.transform[0], Standardize) else self.dtype

    def in_range(self, x: Tensor) -> Tensor:
        """Which values of the data ``x`` (N, D) the flow can take: False where a value,
        after the standardization if there is one, overflows the flow's dtype (a ``1e300`` that
        float64 holds but float32 cannot). Same shape as ``x``."""
        x = x.to(torch.float64)
        first = self.transform[0]
        if isinstance(first, Standardize):
            x = (x - first.mean.to(x.device)) / first.std.to(x.device)
        return x.abs() <= torch.finfo(self.dtype).max

    def set_standardization(self, mean: Tensor, std: Tensor) -> None:
        """Set the data mean and std that the first layer removes (needs ``standardize=True``)."""
        first = self.transform[0]
        if not isinstance(first, Standardize):
            raise ConfigError("this flow was built with standardize=False")
        first.set_statistics(mean, std)
