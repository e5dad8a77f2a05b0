"""Flows: a bijection onto a base distribution, and the Real NVP builder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from realnvp.bijections import (
    AdditiveCoupling,
    AffineCoupling,
    Bijection,
    Compose,
    Standardize,
    half_mask,
)
from realnvp.bijections.coupling import MAX_SCALE
from realnvp.bijections.masks import validate_mask
from realnvp.distributions import StandardNormal
from realnvp.errors import ConfigError
from realnvp.nn import MLP


def _dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in ("bfloat16", "float16"):
        raise ConfigError(f"conditioner_dtype must be 'bfloat16', 'float16' or None, got {value!r}")
    return getattr(torch, value)


class Flow(nn.Module):
    """A normalizing flow: ``z = f(x)`` with ``z`` distributed as ``base``.

    ``log p(x) = log p_Z(f(x)) + log|det df/dx|`` (the change of variables, eq. 3 of the paper).
    Calling the flow returns ``log_prob``, so a training step is ``loss = -flow(x).mean()``.
    """

    def __init__(self, transform: Bijection, base: StandardNormal):
        super().__init__()
        self.transform = transform
        self.base = base

    def forward(self, x: Tensor) -> Tensor:
        return self.log_prob(x)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of each row of ``x``: (B, *event) -> (B,).

        It runs in the flow's mode: in training mode a batch-norm bijection uses the batch's
        moments, as the paper trains; ``eval()`` (or ``realnvp.training.evaluate_nll``) scores
        each row on its own.
        """
        z, log_det = self.transform(x)
        return self.base.log_prob(z) + log_det

    @property
    def device(self) -> torch.device:
        """The device of the model's tensors (where samples are drawn)."""
        return self.base.log_norm.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype the model computes in."""
        return self.base.log_norm.dtype

    @contextmanager
    def evaluating(self) -> Iterator[Flow]:
        """Evaluation mode for the duration of a ``with`` block, then every submodule's own mode
        back: generation and inference must not use batch statistics (a sample would depend on
        the rest of its batch, and ``decode(encode(x))`` would miss ``x``) or update running
        averages."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            yield self
        finally:
            for m, mode in modes:
                m.training = mode

    def encode(self, x: Tensor) -> Tensor:
        """Latent inference, ``z = f(x)``, in evaluation mode whatever the flow's mode."""
        with self.evaluating():
            return self.transform(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Generation from a latent, ``x = f^-1(z)``, in evaluation mode whatever the flow's
        mode."""
        with self.evaluating():
            return self._decode(z)

    def _decode(self, z: Tensor) -> Tensor:
        return self.transform.inverse(z)[0]

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` samples ``x = f^-1(z)``, ``z ~ N(0, temperature^2 I)``, on the model's device;
        in evaluation mode, so each sample is independent of the others and nothing changes."""
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        with self.evaluating():
            return self._decode(self.base.sample(n, temperature, generator))

    def sample_and_log_prob(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` samples and their log-densities from one inverse pass, in evaluation mode:
        ``log p(x) = log p_Z(z) - log|det df^-1/dz|``."""
        with self.evaluating():
            z = self.base.sample(n, generator=generator)
            x, log_det = self.transform.inverse(z)
            return x, self.base.log_prob(z) - log_det

    def compile(self, **kwargs: Any) -> Flow:
        """Compile ``log_prob`` (so training and scoring) and the inverse pass (so ``decode`` and
        ``sample``) with ``torch.compile``; ``kwargs`` go to it. Returns the flow itself.

        Each new batch shape compiles first (tens of seconds on a CPU, which needs a C++
        compiler); afterwards the fused kernels run faster than eager PyTorch (see README's
        Performance section). Weights, checkpoints and results are unchanged.
        """
        self.log_prob = torch.compile(self.log_prob, **kwargs)  # type: ignore[method-assign]
        self._decode = torch.compile(self._decode, **kwargs)  # type: ignore[method-assign]
        return self

    def regularization(self) -> Tensor:
        """The L2 term of the paper's code: the sum of squares of every affine coupling's
        log-scale bound and of every weight-norm magnitude in the conditioners."""
        from realnvp.nn import weight_norm_magnitudes

        terms = weight_norm_magnitudes(self) + [
            m.scale for m in self.modules() if isinstance(m, AffineCoupling)
        ]
        zero = torch.zeros((), device=self.device)
        return sum((t.square().sum() for t in terms), zero)


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
        mask: the first layer's mask (True = kept); later layers alternate it with its
            complement. Default: keep the first ``ceil(D/2)`` features.
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

    def __init__(
        self,
        features: int,
        num_layers: int = 8,
        hidden_features: int = 128,
        num_hidden_layers: int = 2,
        activation: str = "relu",
        coupling: str = "affine",
        mask: Tensor | list[bool] | None = None,
        standardize: bool = False,
        scale_init: float = 2.0,
        conditioner_dtype: str | torch.dtype | None = None,
        max_scale: float | None = MAX_SCALE,
    ):
        if features < 2:
            raise ConfigError(f"Real NVP needs features >= 2 to couple, got features={features}")
        if num_layers < 1:
            raise ConfigError(f"num_layers must be at least 1, got {num_layers}")
        if coupling not in ("affine", "additive"):
            raise ConfigError(f"coupling must be 'affine' or 'additive', got {coupling!r}")
        dtype = _dtype(conditioner_dtype)
        first = half_mask(features) if mask is None else validate_mask(torch.as_tensor(mask))
        if first.shape != (features,):
            raise ConfigError(f"mask must have shape ({features},), got {tuple(first.shape)}")

        layers: list[Bijection] = []
        if standardize:
            layers.append(Standardize(torch.zeros(features), torch.ones(features)))
        for i in range(num_layers):
            m = first if i % 2 == 0 else ~first
            n_keep, n_rest = int(m.sum()), int((~m).sum())
            width = 2 * n_rest if coupling == "affine" else n_rest
            net = MLP(n_keep, width, hidden_features, num_hidden_layers, activation, True, dtype)
            if coupling == "affine":
                layers.append(AffineCoupling(m, net, scale_init, max_scale))
            else:
                layers.append(AdditiveCoupling(m, net))
        super().__init__(Compose(layers), StandardNormal(features))
        # The constructor's arguments, JSON-friendly, so a checkpoint can rebuild the model.
        self.config: dict[str, Any] = {
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

    @property
    def couplings(self) -> list[Bijection]:
        """The coupling layers, without the standardization."""
        return [b for b in self.transform.layers if not isinstance(b, Standardize)]

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
