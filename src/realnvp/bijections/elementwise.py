"""Fixed bijections with no parameters: a permutation and a standardization."""

from __future__ import annotations

import torch
from torch import Tensor

from realnvp.bijections.base import Bijection


class Permutation(Bijection):
    """Reorder features: ``z = x[:, perm]``; volume preserving.

    Example:
        >>> Permutation(torch.tensor([2, 0, 1]))(torch.tensor([[10.0, 11.0, 12.0]]))[0].tolist()
        [[12.0, 10.0, 11.0]]
    """

    def __init__(self, perm: Tensor):
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        if perm.dim() != 1 or not torch.equal(perm.sort().values, torch.arange(perm.numel())):
            raise ValueError(f"perm must be a permutation of 0..D-1, got {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.index_select(1, self.perm), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z.index_select(1, self.inverse_perm), z.new_zeros(z.shape[0])


class Standardize(Bijection):
    """A fixed elementwise affine map, ``z = (x - mean) / std``, with
    ``log|det dz/dx| = -sum(log std)``.

    Put first in a flow, it lets the flow train on standardized data while ``log_prob`` stays a
    density in the data's own units. ``mean`` and ``std`` are buffers: saved with the model,
    never trained.

    Example:
        >>> f = Standardize(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
        >>> z, log_det = f(torch.tensor([[3.0, 6.0]]))
        >>> z.tolist(), round(log_det.item(), 4)
        ([[1.0, 1.0]], -2.0794)
    """

    def __init__(self, mean: Tensor, std: Tensor):
        super().__init__()
        mean, std = torch.as_tensor(mean), torch.as_tensor(std)
        if mean.shape != std.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and std {tuple(std.shape)} differ in shape")
        if not bool((std > 0).all()):
            raise ValueError("every std must be positive")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    @torch.no_grad()
    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Overwrite the mean and std in place (device and dtype are kept)."""
        if not bool((torch.as_tensor(std) > 0).all()):
            raise ValueError("every std must be positive")
        self.mean.copy_(torch.as_tensor(mean))
        self.std.copy_(torch.as_tensor(std))

    def _log_det(self, x: Tensor) -> Tensor:
        return (-torch.log(self.std).sum()).expand(x.shape[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return (x - self.mean) / self.std, self._log_det(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z * self.std + self.mean, -self._log_det(z)
