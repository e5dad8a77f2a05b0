"""DistributedDataParallel on CPU with gloo: 2 processes reproduce 1 process with the same
global batch, and the batch-norm bijection's statistics are those of the global batch."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from realnvp import RealNVP
from realnvp.bijections import ActNorm, BatchNorm
from realnvp.nn import BatchNorm2d as ResNetBatchNorm2d
from realnvp.training import TrainConfig, Trainer
from realnvp.training.checkpoint import load_model

ARGS = [
    "moons",
    "--rows",  # torchrun would take --n for an abbreviation of one of its own options
    "2000",
    "--steps",
    "40",
    "--eval-every",
    "10",
    "--layers",
    "4",
    "--hidden",
    "16",
    "--batch-size",
    "64",
    "--lr",
    "0.005",
    "--device",
    "cpu",
    "--no-progress",
]


def metrics(run: Path) -> list[dict[str, float]]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def train(out: Path, processes: int, data: str = "moons") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ARGS if data == "moons" else [data, *ARGS[3:]]  # a file: no --rows
    if processes == 1:
        command = [sys.executable, "-m", "realnvp", "train", *args, "--out", str(out)]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "realnvp",
            "train",
            *args,
            "--out",
            str(out),
        ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def one_and_two_processes(train_fn, tmp_path: Path) -> tuple[list[dict], list[dict]]:
    """Train into tmp_path/one with 1 process and tmp_path/two with 2; their metrics."""
    for name, processes in (("one", 1), ("two", 2)):
        result = train_fn(tmp_path / name, processes)
        assert result.returncode == 0, result.stderr
    assert "on 2 processes" in result.stderr
    return metrics(tmp_path / "one"), metrics(tmp_path / "two")


@pytest.mark.slow
def test_two_processes_follow_the_single_process_loss_curve(tmp_path: Path) -> None:
    """From a .npy file read in place each process gathers only its share of each batch; the
    two shares together are the one process's batch."""
    import numpy as np

    from realnvp.data.toy import toy_data

    np.save(tmp_path / "moons.npy", toy_data("moons", 2000, 0).astype(np.float32))

    def train_npy(out: Path, processes: int) -> subprocess.CompletedProcess:
        return train(out, processes, str(tmp_path / "moons.npy"))

    one, two = one_and_two_processes(train_npy, tmp_path)
    assert [r["step"] for r in one] == [r["step"] for r in two] == [10, 20, 30, 40]
    for a, b in zip(one, two, strict=True):
        assert b["train_nll"] == pytest.approx(a["train_nll"], rel=1e-5, abs=1e-6)
        assert b["val_nll"] == pytest.approx(a["val_nll"], rel=1e-5, abs=1e-6)
    # the curve really moved, so agreeing is not trivial
    assert one[-1]["train_nll"] < one[0]["train_nll"] - 0.1
    flow_one, _ = load_model(tmp_path / "one")
    flow_two, _ = load_model(tmp_path / "two")
    for (name, p), q in zip(
        flow_one.state_dict().items(), flow_two.state_dict().values(), strict=True
    ):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), name


def train_images(out: Path, processes: int) -> subprocess.CompletedProcess:
    args = ["digits", "--out", str(out), "--steps", "20", "--eval-every", "10", "--scales", "2"]
    args += ["--channels", "4", "--blocks", "1", "--batch-size", "32", "--device", "cpu"]
    args += ["--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "realnvp", "train"]
    if processes > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launch += [f"--nproc_per_node={processes}", "-m", "realnvp", "train"]
    return subprocess.run([*launch, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_two_processes_train_the_image_model_as_one(tmp_path: Path) -> None:
    """The image model end to end: the batch-norm bijection, the batch norms inside the ResNet
    conditioners and the dequantization noise are shared out so that 2 processes follow 1.

    The training loss agrees to float rounding (1e-5). The validation NLL, in evaluation mode,
    reads the running averages, and those follow the biases of the convolutions that feed a
    batch norm: their gradient is zero in exact arithmetic (the norm removes any shift), so Adam,
    which divides a gradient by its own size, turns the rounding noise of a different summation
    order into steps of the learning rate's size (measured: 1.5e-4 relative after 10 steps).
    With the conditioners' batch norms left unsynchronised the training loss was off by 3e-5
    relative after 10 steps, three times the tolerance."""
    one, two = one_and_two_processes(train_images, tmp_path)
    assert [r["step"] for r in one] == [r["step"] for r in two] == [10, 20]
    for a, b in zip(one, two, strict=True):
        assert b["train_bpd"] == pytest.approx(a["train_bpd"], rel=1e-5)
        assert b["val_bpd"] == pytest.approx(a["val_bpd"], rel=1e-3)
    assert one[-1]["train_bpd"] < one[0]["train_bpd"]


def _join(rank: int, world: int, init_file: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    torch.set_num_threads(1)


def _global_batch_norm(x: torch.Tensor, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The reference: one process, no process group, the whole batch."""
    x = x.clone().requires_grad_(True)
    out = module(x)
    z, log_det = out if isinstance(out, tuple) else (out, None)
    z.square().sum().backward()
    reference = {"z": z.detach(), "grad": x.grad, **dict(module.named_buffers())}
    if log_det is not None:
        reference["log_det"] = log_det.detach()
    return reference


def _batch_norm_worker(
    rank: int, world: int, init_file: str, x: torch.Tensor, kind: str, reference: dict
) -> None:
    _join(rank, world, init_file)
    try:
        module = make_batch_norm(kind)
        local = x[rank::world].clone().requires_grad_(True)
        out = module(local)
        z, log_det = out if isinstance(out, tuple) else (out, None)
        z.square().sum().backward()
        assert torch.allclose(z, reference["z"][rank::world], atol=1e-12)
        if log_det is not None:
            assert torch.allclose(log_det, reference["log_det"][rank::world], atol=1e-12)
        for name, buffer in module.named_buffers():
            assert torch.allclose(buffer.double(), reference[name].double(), atol=1e-12), name
        # gradients flow through the all-reduce as through the global batch's moments
        assert torch.allclose(local.grad, reference["grad"][rank::world], atol=1e-10)
    finally:
        dist.destroy_process_group()


def make_batch_norm(kind: str) -> torch.nn.Module:
    if kind == "bijection":
        return BatchNorm(3, momentum=0.5).double()
    if kind == "actnorm":  # initialised by its first batch: the global batch's moments
        return ActNorm(3).double()
    torch.manual_seed(0)
    module = ResNetBatchNorm2d(3, momentum=0.5).double()
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-1, 1)
    return module


@pytest.mark.parametrize("kind", ["bijection", "conditioner", "actnorm"])
def test_batch_norm_statistics_are_those_of_the_global_batch(tmp_path: Path, kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 4, 4, generator=g, dtype=torch.float64) * 2 + 1
    reference = _global_batch_norm(x, make_batch_norm(kind).train())
    args = (2, str(tmp_path / "init"), x, kind, reference)
    mp.spawn(_batch_norm_worker, args=args, nprocs=2, join=True)


def _nan_worker(rank: int, world: int, init_file: str, results: str) -> None:
    _join(rank, world, init_file)
    try:
        torch.manual_seed(0)
        flow = RealNVP(2, num_layers=2, hidden_features=8)

        def poison(x: torch.Tensor, step: int, seed: int) -> torch.Tensor:
            return x * math.inf if rank == 1 and step == 2 else x

        flow.training_batch = poison  # type: ignore[method-assign]

        x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
        config = TrainConfig(steps=10, batch_size=32, eval_every=5)
        try:
            Trainer(flow, x, None, config).fit()
        except FloatingPointError as error:
            Path(f"{results}.{rank}").write_text(str(error))
    finally:
        dist.destroy_process_group()


def test_a_nan_loss_on_one_process_stops_every_process(tmp_path: Path) -> None:
    """Rank 1 alone gets a non-finite loss at step 3; rank 0 must stop too, naming the step,
    instead of waiting forever in the next all-reduce."""
    results = str(tmp_path / "error")
    args = (2, str(tmp_path / "init"), results)
    mp.spawn(_nan_worker, args=args, nprocs=2, join=True)
    for rank in (0, 1):
        message = Path(f"{results}.{rank}").read_text()
        assert "at step 3" in message and "1 of 2 processes" in message


def _autocast_worker(rank: int, world: int, init_file: str, x: torch.Tensor, ref: dict) -> None:
    _join(rank, world, init_file)
    try:
        module = make_batch_norm("conditioner").float()
        with torch.autocast("cpu", torch.bfloat16):
            z = module(x[rank::world])
        assert z.dtype == ref["z"].dtype
        assert torch.allclose(z, ref["z"][rank::world], atol=1e-5)
        assert torch.allclose(module.running_var, ref["running_var"], atol=1e-5)
    finally:
        dist.destroy_process_group()


def test_conditioner_batch_norm_under_bf16_autocast(tmp_path: Path) -> None:
    """Under --bf16 the convolutions hand the batch norm bf16 values; its moments are taken in
    float32, as nn.BatchNorm2d takes them, on every process."""
    x = (torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 + 1).bfloat16()
    module = make_batch_norm("conditioner").float().train()
    with torch.autocast("cpu", torch.bfloat16):
        z = module(x)
    reference = {"z": z.detach(), "running_var": module.running_var.clone()}
    mp.spawn(_autocast_worker, args=(2, str(tmp_path / "init"), x, reference), nprocs=2)
