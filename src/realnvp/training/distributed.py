"""Training on several processes with PyTorch's own engine: DistributedDataParallel, launched by
``torchrun`` (gloo on CPU, nccl on CUDA).

What each rank does, so that N processes reproduce one process with the same global batch:

- every rank holds the data and draws the same global batch from ``(seed, epoch)``; rank ``r``
  trains on its share ``batch[r::N]`` (what ``DistributedSampler`` does, but derived from the
  exact-resume batch order, so the union of the shares is the single-process batch);
- dequantization noise is drawn for the whole global batch and sliced the same way, so each rank
  gets different noise and the union is the single-process noise;
- the batch-norm bijection all-reduces its moments (``BatchNorm`` calls ``all_reduce_moments``),
  because they enter the log-det; ``DistributedDataParallel`` averages the gradients;
- reported losses and NLLs are all-reduced sums, so they are those of the global batch and the
  whole validation set; only rank 0 writes checkpoints and metrics.
"""

from __future__ import annotations

import os

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


def init_from_env(device: str = "auto") -> torch.device | None:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1 in the environment):
    nccl with one GPU per local rank when CUDA is there and asked for, else gloo on CPU. Returns
    this rank's device, or None when not launched that way."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if device == "cuda" and not use_cuda:
            raise ValueError("--device cuda was asked for, but no CUDA device is available")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


def all_reduce_moments(x: Tensor, dims: list[int]) -> tuple[Tensor, Tensor]:
    """Mean and biased variance over ``dims`` of the global batch spread over the ranks, with
    gradients (two passes: the mean, then the squared deviations from it)."""
    all_reduce = _AllReduceSum.apply
    count = all_reduce_sum(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
    mean = all_reduce(x.sum(dims)) / count
    centred = x - mean.reshape(1, -1, *[1] * (x.dim() - 2))
    var = all_reduce(centred.square().sum(dims)) / count
    return mean, var
