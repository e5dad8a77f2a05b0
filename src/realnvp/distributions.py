"""Base distributions of a flow."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from realnvp.bijections.base import sum_except_batch


class StandardNormal(nn.Module):
    """An isotropic standard normal over ``event_shape``.

    Its constants are buffers, so ``.to(device, dtype)`` moves it with the model and samples are
    drawn on the model's device in the model's dtype.

    Examples:
        >>> import math, torch
        >>> base = StandardNormal((2,))
        >>> base.sample(3).shape
        torch.Size([3, 2])
        >>> log_p = base.log_prob(torch.zeros(1, 2)).item()  # float32
        >>> math.isclose(log_p, -math.log(2 * math.pi), rel_tol=1e-6)
        True
    """

    log_norm: Tensor  # buffer: the log of the normalizing constant

    def __init__(self, event_shape: tuple[int, ...] | int):
        super().__init__()
        self.event_shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        dim = math.prod(self.event_shape)
        self.register_buffer("log_norm", torch.tensor(-0.5 * dim * math.log(2 * math.pi)))

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """``log N(z; 0, I)`` per batch element: (B, *event) -> (B,); the same for every
        ``context``."""
        return self.log_norm - 0.5 * sum_except_batch(z * z)

    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        """``n`` draws of ``temperature * N(0, I)``: (n, *event); the same for every
        ``context``."""
        z = torch.randn(
            (n, *self.event_shape),
            device=self.log_norm.device,
            dtype=self.log_norm.dtype,
            generator=generator,
        )
        return z * temperature if temperature != 1.0 else z


class ConditionalNormal(StandardNormal):
    """A diagonal normal whose mean and log-std are learned functions of the context, as in
    Glow's class-conditional prior: ``z ~ N(mu(h), diag(sigma(h))^2)`` with
    ``(mu, log sigma) = W h + b`` for the embedded context ``h`` (B, context_features).

    Over a multi-scale model's latent, which holds every factored-out level, each level gets its
    own mean and log-std per context. ``W`` and ``b`` start at zero: the base starts as the
    standard normal.

    Examples:
        >>> base = ConditionalNormal((2,), context_features=3)
        >>> h = torch.eye(3)[[0, 2]]  # two one-hot labels
        >>> base.sample(2, context=h).shape, base.log_prob(torch.zeros(2, 2), h).shape
        (torch.Size([2, 2]), torch.Size([2]))
    """

    def __init__(self, event_shape: tuple[int, ...] | int, context_features: int):
        super().__init__(event_shape)
        dim = math.prod(self.event_shape)
        self.context_features = context_features
        self.net = nn.Linear(context_features, 2 * dim)
        nn.init.zeros_(self.net.weight)
        nn.init.zeros_(self.net.bias)

    def _moments(self, context: Tensor | None, n: int) -> tuple[Tensor, Tensor]:
        if context is None or context.shape != (n, self.context_features):
            shape = None if context is None else tuple(context.shape)
            raise ValueError(
                f"a conditional base needs a context of shape ({n}, {self.context_features}), "
                f"got {shape}"
            )
        mean, log_std = self.net(context.to(self.log_norm.dtype)).chunk(2, dim=1)
        return mean.reshape(n, *self.event_shape), log_std.reshape(n, *self.event_shape)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """``log N(z; mu(h), sigma(h)^2)`` per batch element: (B, *event) -> (B,)."""
        mean, log_std = self._moments(context, z.shape[0])
        u = (z - mean) * torch.exp(-log_std)
        return self.log_norm - sum_except_batch(0.5 * u * u + log_std)

    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        """``n`` draws, one per row of ``context`` (n, context_features): ``mu(h) +
        temperature * sigma(h) * eps``."""
        mean, log_std = self._moments(context, n)
        eps = super().sample(n, temperature, generator)
        return mean + torch.exp(log_std) * eps
