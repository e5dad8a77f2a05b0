"""Normalization as a bijection: batch normalization (Dinh et al. 2017, section 3.7 and eq. 17-18)
and activation normalization (Kingma and Dhariwal 2018, Glow, section 3.1)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from realnvp import collectives
from realnvp.bijections.base import Bijection
from realnvp.errors import ConfigError


def _per_feature(v: Tensor, x: Tensor) -> Tensor:
    """A (features,) tensor shaped to broadcast over ``x``'s dimension 1."""
    return v.reshape(1, -1, *[1] * (x.dim() - 2))


def feature_moments(x: Tensor, who: str) -> tuple[Tensor, Tensor]:
    """Mean and (biased) variance of each feature (dimension 1) over the batch and any spatial
    dims; under DistributedDataParallel, over the global batch of all ranks. ``who`` names the
    caller in the error for a batch with one value per feature."""
    dims = [0, *range(2, x.dim())]
    if collectives.is_distributed():  # the global batch's moments, across the ranks
        mean, var, _ = collectives.all_reduce_moments(x, dims)
        return mean, var
    if x.numel() // x.shape[1] < 2:
        raise ConfigError(f"{who} needs more than one value per feature")
    mean = x.mean(dims)
    var = (x - _per_feature(mean, x)).square().mean(dims)
    return mean, var


def _pixels(x: Tensor) -> int:
    """Entries per feature in one example: an image's pixels, 1 for vectors."""
    return math.prod(x.shape[2:])


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

    Examples:
        >>> bn = BatchNorm(2)
        >>> z, log_det = bn(torch.randn(64, 2) * 3 + 1)
        >>> bool(z.mean(0).abs().max() < 1e-5), log_det.shape
        (True, torch.Size([64]))
    """

    running_mean: Tensor  # buffers
    running_var: Tensor

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
        return feature_moments(x, "batch norm in training mode")

    def _moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.training:
            return self.running_mean, self.running_var
        mean, var = self.batch_moments(x)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach(), self.momentum)
        return mean, var

    def _log_det(self, var: Tensor, x: Tensor) -> Tensor:
        return (-0.5 * _pixels(x) * torch.log(var + self.eps).sum()).expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mean, var = self._moments(x)
        z = (x - _per_feature(mean, x)) * torch.rsqrt(_per_feature(var, x) + self.eps)
        return z, self._log_det(var, x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mean, var = self.running_mean, self.running_var
        x = z * torch.sqrt(_per_feature(var, z) + self.eps) + _per_feature(mean, z)
        return x, -self._log_det(var, z)

    def extra_repr(self) -> str:
        return f"{self.running_mean.numel()}, momentum={self.momentum}, eps={self.eps}"


class ActNorm(Bijection):
    """Activation normalization (Glow, section 3.1): ``z = (x - loc) * exp(-log_scale)`` per
    feature (dimension 1: a vector's features, an image's channels), with
    ``log|det dz/dx| = -sum(log_scale)`` times the entries per feature of one example.

    An affine bijection with learned ``loc`` and ``log_scale`` that, unlike ``BatchNorm``, does
    not depend on the batch, so it behaves the same in training and evaluation and at any batch
    size. Data-dependent initialisation: the first forward call in training mode sets ``loc`` and
    ``log_scale`` to that batch's mean and log standard deviation (over all ranks under
    DistributedDataParallel), so the layer's output starts with zero mean and unit variance per
    feature; after that they are ordinary parameters. Whether that has happened is the buffer
    ``initialized``, part of ``state_dict``: a model restored from a checkpoint keeps its
    trained values and is not initialised again by its next batch. (Without the buffer, a
    reloaded model would be re-initialised from whatever batch it saw next.)

    Args:
        features: size of dimension 1.
        eps: added to the variance at initialisation.

    Examples:
        >>> an = ActNorm(2)
        >>> z, log_det = an(torch.randn(64, 2) * 3 + 1)  # the first batch initialises it
        >>> bool(z.mean(0).abs().max() < 1e-5), bool(an.initialized)
        (True, True)
        >>> x, _ = an.inverse(z)
        >>> z2, _ = an(x * 2)  # from now on a fixed affine map: no re-initialisation
        >>> bool(z2.mean(0).abs().max() > 0.1)
        True
    """

    initialized: Tensor  # buffer

    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        if features < 1:
            raise ConfigError(f"features must be at least 1, got {features}")
        self.eps = eps
        self.loc = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))
        self._seen_initialized = False  # the buffer read once, so later steps need no sync

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._seen_initialized = False  # read the loaded buffer again

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``loc`` and ``log_scale`` from the batch ``x``: its output gets zero mean and
        unit variance per feature."""
        mean, var = feature_moments(x.detach(), "actnorm's data-dependent initialisation")
        self.loc.copy_(mean)
        self.log_scale.copy_(0.5 * torch.log(var + self.eps))
        self.initialized.fill_(True)

    def _log_det(self, x: Tensor) -> Tensor:
        return (-_pixels(x) * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not self._seen_initialized:
            if not bool(self.initialized):
                self.initialize(x)
            self._seen_initialized = True
        z = (x - _per_feature(self.loc, x)) * torch.exp(-_per_feature(self.log_scale, x))
        return z, self._log_det(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = z * torch.exp(_per_feature(self.log_scale, z)) + _per_feature(self.loc, z)
        return x, -self._log_det(z)

    def extra_repr(self) -> str:
        return f"{self.loc.numel()}, initialized={bool(self.initialized)}"
