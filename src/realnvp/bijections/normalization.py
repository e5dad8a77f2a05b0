"""Batch normalization as a bijection (Dinh et al. 2017, section 3.7 and eq. 17-18)."""

from __future__ import annotations

import torch
from torch import Tensor

from realnvp import collectives
from realnvp.bijections.base import Bijection
from realnvp.errors import ConfigError


class BatchNorm(Bijection):
    """``z = (x - mean) / sqrt(var + eps)`` per feature (dimension 1: a vector's features, an
    image's channels), with ``log|det dz/dx| = -1/2 * sum(log(var + eps))`` over every entry of
    the event (paper eq. 18).

    In training mode ``mean`` and ``var`` are the batch's moments (over the batch and, for images,
    the pixels), treated as constants in the log-det as in the paper, and the running averages
    follow them with ``momentum``. In evaluation mode the running averages are used, and the map is
    a fixed affine bijection with an exact inverse. ``inverse`` always uses the running averages:
    in training mode the forward map depends on the whole batch and has no inverse of its own.

    Args:
        features: size of dimension 1.
        momentum: weight of the newest batch in the running averages.
        eps: added to the variance.

    Example:
        >>> bn = BatchNorm(2)
        >>> z, log_det = bn(torch.randn(64, 2) * 3 + 1)
        >>> bool(z.mean(0).abs().max() < 1e-5), log_det.shape
        (True, torch.Size([64]))
    """

    def __init__(self, features: int, momentum: float = 0.05, eps: float = 1e-4):
        super().__init__()
        if features < 1:
            raise ConfigError(f"features must be at least 1, got {features}")
        if not 0 < momentum <= 1:
            raise ConfigError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def batch_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and (biased) variance of each feature over the batch and any spatial dims; under
        DistributedDataParallel, over the global batch of all ranks."""
        dims = [0, *range(2, x.dim())]
        if collectives.is_distributed():  # the global batch's moments, across the ranks
            mean, var, _ = collectives.all_reduce_moments(x, dims)
            return mean, var
        count = x.numel() // x.shape[1]
        if count < 2:
            raise ConfigError("batch norm in training mode needs more than one value per feature")
        mean = x.mean(dims)
        var = (x - mean.reshape(1, -1, *[1] * (x.dim() - 2))).square().mean(dims)
        return mean, var

    def _moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.training:
            return self.running_mean, self.running_var
        mean, var = self.batch_moments(x)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach(), self.momentum)
        return mean, var

    def _shape(self, v: Tensor, x: Tensor) -> Tensor:
        return v.reshape(1, -1, *[1] * (x.dim() - 2))

    def _log_det(self, var: Tensor, x: Tensor) -> Tensor:
        pixels = x[0, 0].numel()  # entries per feature in one example (1 for vectors)
        return (-0.5 * pixels * torch.log(var + self.eps).sum()).expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mean, var = self._moments(x)
        z = (x - self._shape(mean, x)) * torch.rsqrt(self._shape(var, x) + self.eps)
        return z, self._log_det(var, x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mean, var = self.running_mean, self.running_var
        x = z * torch.sqrt(self._shape(var, z) + self.eps) + self._shape(mean, z)
        return x, -self._log_det(var, z)

    def extra_repr(self) -> str:
        return f"{self.running_mean.numel()}, momentum={self.momentum}, eps={self.eps}"
