"""Elementwise bijections with no trained parameters: permutation, standardization, logit."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from realnvp.bijections.base import Bijection, sum_except_batch
from realnvp.errors import ConfigError


class Permutation(Bijection):
    """Reorder features: ``z = x[:, perm]``; volume preserving.

    Examples:
        >>> Permutation(torch.tensor([2, 0, 1]))(torch.tensor([[10.0, 11.0, 12.0]]))[0].tolist()
        [[12.0, 10.0, 11.0]]
    """

    perm: Tensor  # buffers
    inverse_perm: Tensor

    def __init__(self, perm: Tensor):
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        if perm.dim() != 1 or not torch.equal(perm.sort().values, torch.arange(perm.numel())):
            raise ConfigError(f"perm must be a permutation of 0..D-1, got {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.index_select(1, self.perm), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z.index_select(1, self.inverse_perm), z.new_zeros(z.shape[0])


def _check_statistics(mean: Tensor, std: Tensor) -> None:
    """Refuse statistics that cannot standardize: a non-finite mean or std (a column whose
    values overflow float64 when squared), or a std that is not positive; name the feature."""
    bad = ~(torch.isfinite(mean) & torch.isfinite(std) & (std > 0))
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0])
        raise ConfigError(
            f"feature {i + 1}: mean {mean.flatten()[i].item():g} and std "
            f"{std.flatten()[i].item():g} cannot standardize (the std must be finite and "
            "positive, the mean finite)"
        )


class Standardize(Bijection):
    """A fixed elementwise affine map, ``z = (x - mean) / std``, with
    ``log|det dz/dx| = -sum(log std)``.

    Put first in a flow, it lets the flow train on standardized values while ``log_prob`` stays a
    density in the data's own units. ``mean`` and ``std`` are buffers: saved with the model,
    never trained.

    It is where the user's data meet the model, so it works in float64 whatever the model's
    dtype: the statistics are float64 buffers (kept so by ``.float()`` and ``.to()``), ``forward``
    takes data in any float dtype, standardizes them in float64 and only then casts to the model's
    dtype, and ``inverse`` returns float64 data. A column of values near ``1e7`` thus keeps its
    digits, which float32 (7 significant digits) would round away before the subtraction.

    Examples:
        >>> import torch
        >>> f = Standardize(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
        >>> z, log_det = f(torch.tensor([[3.0, 6.0]]))
        >>> z.tolist(), round(log_det.item(), 4)
        ([[1.0, 1.0]], -2.0794)
    """

    mean: Tensor  # buffers
    std: Tensor
    _like: Tensor

    def __init__(self, mean: Tensor, std: Tensor):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float64)
        std = torch.as_tensor(std, dtype=torch.float64)
        if mean.shape != std.shape:
            raise ConfigError(
                f"mean {tuple(mean.shape)} and std {tuple(std.shape)} differ in shape"
            )
        _check_statistics(mean, std)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        # Follows the model's casts and moves: the dtype and device that ``forward`` returns.
        self.register_buffer("_like", torch.zeros(()), persistent=False)

    @classmethod
    def identity(cls, features: int) -> Standardize:
        """Mean 0 and std 1 for ``features`` features: a placeholder until
        ``set_statistics``."""
        return cls(torch.zeros(features), torch.ones(features))

    def _apply(self, fn, recurse=True):
        stats = {"mean": self.mean, "std": self.std}
        super()._apply(fn, recurse)
        for name, value in stats.items():  # moved with the model, but never cast down
            setattr(self, name, value.to(self._like.device, torch.float64))
        return self

    @torch.no_grad()
    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Overwrite the mean and std in place (stored in float64)."""
        mean = torch.as_tensor(mean, dtype=torch.float64)
        std = torch.as_tensor(std, dtype=torch.float64)
        _check_statistics(mean, std)
        self.mean.copy_(mean)
        self.std.copy_(std)

    def _log_det(self, x: Tensor) -> Tensor:
        return (-torch.log(self.std).sum()).to(self._like.dtype).expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = (x.to(torch.float64) - self.mean) / self.std
        return z.to(self._like.dtype), self._log_det(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z.to(torch.float64) * self.std + self.mean, -self._log_det(z)


class Logit(Bijection):
    """The paper's image preprocessing (section 4.1), a bijection counted in the likelihood:
    pixels ``x`` in ``(0, levels)`` (dequantized grey levels) map to
    ``z = logit(alpha + (1 - 2 * alpha) * x / levels)``.

    ``log|det dz/dx| = sum(log((1 - 2 alpha) / levels) - log p - log(1 - p))`` with
    ``p = alpha + (1 - 2 alpha) x / levels``. Because the map starts from pixel units, the flow's
    ``log_prob`` is a density over dequantized pixels, and bits per dimension are simply
    ``-log_prob / (D * log 2)`` (see ``realnvp.models.bits_per_dim``).

    Examples:
        >>> f = Logit(levels=256, alpha=0.05)
        >>> z, _ = f(torch.tensor([[128.0]]))
        >>> round(z.item(), 6)
        0.0
    """

    def __init__(self, levels: int, alpha: float):
        super().__init__()
        if levels < 2:
            raise ConfigError(f"must be at least 2, got {levels}", "levels")
        if not 0 <= alpha < 0.5:
            raise ConfigError(f"must be in [0, 0.5), got {alpha}", "alpha")
        self.levels = levels
        self.alpha = alpha
        self.log_slope = math.log((1 - 2 * alpha) / levels)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) / self.levels * x
        log_p, log_q = torch.log(p), torch.log1p(-p)
        log_det = sum_except_batch(self.log_slope - log_p - log_q)
        return log_p - log_q, log_det

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = torch.sigmoid(z)
        x = (p - self.alpha) * (self.levels / (1 - 2 * self.alpha))
        log_det = -sum_except_batch(self.log_slope - F.logsigmoid(z) - F.logsigmoid(-z))
        return x, log_det

    def extra_repr(self) -> str:
        return f"levels={self.levels}, alpha={self.alpha}"
