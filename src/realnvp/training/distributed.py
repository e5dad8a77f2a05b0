"""Training on several processes with PyTorch's own engine: DistributedDataParallel, launched by
``torchrun`` (gloo on CPU, nccl on CUDA).

What each rank does, so that N processes reproduce one process with the same global batch:

- every rank holds the data and draws the same global batch from ``(seed, epoch)``; rank ``r``
  trains on its share ``batch[r::N]`` (what ``DistributedSampler`` does, but derived from the
  exact-resume batch order, so the union of the shares is the single-process batch);
- dequantization noise is drawn for the whole global batch and sliced the same way, so each rank
  gets different noise and the union is the single-process noise;
- the batch-norm bijection all-reduces its moments (``BatchNorm`` calls ``all_reduce_moments``),
  because they enter the log-det, and so does ``ActNorm``'s initialisation from the first batch
  (every rank starts from the global batch's moments), and so do the batch norms inside the
  ResNet conditioners
  (``realnvp.nn.BatchNorm2d``, on CPU and GPU alike); ``DistributedDataParallel`` averages the
  gradients;
- reported losses and NLLs are all-reduced sums, so they are those of the global batch and the
  whole validation set; only rank 0 writes checkpoints and metrics.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# The collectives live below the models, which need them; they are part of this module's API.
from realnvp.collectives import (
    all_reduce_moments,
    all_reduce_sum,
    is_distributed,
    rank,
    world_size,
)
from realnvp.errors import ConfigError
from realnvp.models import Flow

__all__ = [
    "all_reduce_moments",
    "all_reduce_sum",
    "data_parallel",
    "init_from_env",
    "is_distributed",
    "rank",
    "shutdown",
    "world_size",
]


def init_from_env(device: str = "auto") -> torch.device | None:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1 in the environment):
    nccl with one GPU per local rank when CUDA is there and asked for, else gloo on CPU. Returns
    this rank's device, or None when not launched that way."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if device == "cuda" and not use_cuda:
            raise ConfigError("'cuda' was asked for, but no CUDA device is available", "device")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def data_parallel(flow: Flow, batch_size: int) -> nn.Module:
    """``flow`` wrapped in DistributedDataParallel when this process is one of several, else
    ``flow`` itself. ``batch_size`` is the global batch: it must split evenly over the
    processes."""
    n = world_size()
    if n == 1:
        return flow
    if batch_size % n:
        raise ConfigError(
            f"the global batch of {batch_size} must be divisible by the {n} processes",
            "batch_size",
        )
    # The batch norms all-reduce their own moments (realnvp.collectives), on CPU too.
    ids = [flow.device] if flow.device.type == "cuda" else None
    return DistributedDataParallel(flow, device_ids=ids)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
