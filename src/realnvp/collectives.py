"""Collective operations over the processes of a torchrun job, usable by models and training
alike: when no process group is initialised, each is the single-process identity."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum(value: Tensor) -> Tensor:
    """The sum over ranks of ``value`` (no gradient); ``value`` itself when not distributed."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value


class _AllReduceSum(torch.autograd.Function):
    """The sum over ranks, differentiable: every rank's loss depends on every rank's input, so
    the gradient is the sum over ranks too."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_moments(x: Tensor, dims: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and biased variance over ``dims`` of the global batch spread over the ranks, with
    gradients (two passes: the mean, then the squared deviations from it), and the number of
    values per feature they were taken over."""
    all_reduce = _AllReduceSum.apply
    local = torch.tensor(float(x.numel() // x.shape[1]), device=x.device, dtype=x.dtype)
    count = all_reduce_sum(local)
    mean = all_reduce(x.sum(dims)) / count
    centred = x - mean.reshape(1, -1, *[1] * (x.dim() - 2))
    var = all_reduce(centred.square().sum(dims)) / count
    return mean, var, count
