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

    Example:
        >>> import math, torch
        >>> base = StandardNormal((2,))
        >>> base.sample(3).shape
        torch.Size([3, 2])
        >>> log_p = base.log_prob(torch.zeros(1, 2)).item()  # float32
        >>> math.isclose(log_p, -math.log(2 * math.pi), rel_tol=1e-6)
        True
    """

    def __init__(self, event_shape: tuple[int, ...] | int):
        super().__init__()
        self.event_shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        dim = math.prod(self.event_shape)
        self.register_buffer("log_norm", torch.tensor(-0.5 * dim * math.log(2 * math.pi)))

    def log_prob(self, z: Tensor) -> Tensor:
        """``log N(z; 0, I)`` per batch element: (B, *event) -> (B,)."""
        return self.log_norm - 0.5 * sum_except_batch(z * z)

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` draws of ``temperature * N(0, I)``: (n, *event)."""
        z = torch.randn(
            (n, *self.event_shape),
            device=self.log_norm.device,
            dtype=self.log_norm.dtype,
            generator=generator,
        )
        return z * temperature if temperature != 1.0 else z
