"""DistributedDataParallel on CPU with gloo: 2 processes reproduce 1 process with the same
global batch, and the batch-norm bijection's statistics are those of the global batch."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from realnvp.bijections import BatchNorm
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


def train(out: Path, processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        command = [sys.executable, "-m", "realnvp", "train", *ARGS, "--out", str(out)]
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
            *ARGS,
            "--out",
            str(out),
        ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_two_processes_follow_the_single_process_loss_curve(tmp_path: Path) -> None:
    single = train(tmp_path / "one", 1)
    assert single.returncode == 0, single.stderr
    double = train(tmp_path / "two", 2)
    assert double.returncode == 0, double.stderr
    assert "on 2 processes" in double.stderr
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
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


def _batch_norm_worker(rank: int, world: int, init_file: str, x: torch.Tensor) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        bn = BatchNorm(3, momentum=0.5).double()
        local = x[rank::world].clone().requires_grad_(True)
        z, log_det = bn(local)
        z.square().sum().backward()
        global_bn = BatchNorm(3, momentum=0.5).double()
        x_all = x.clone().requires_grad_(True)
        z_all, log_det_all = global_bn(x_all)
        z_all.square().sum().backward()
        assert torch.allclose(z, z_all[rank::world], atol=1e-12)
        assert torch.allclose(log_det, log_det_all[rank::world], atol=1e-12)
        assert torch.allclose(bn.running_mean, global_bn.running_mean, atol=1e-12)
        assert torch.allclose(bn.running_var, global_bn.running_var, atol=1e-12)
        # gradients flow through the all-reduce as through the global batch's moments
        assert torch.allclose(local.grad, x_all.grad[rank::world], atol=1e-10)
    finally:
        dist.destroy_process_group()


def test_batch_norm_statistics_are_those_of_the_global_batch(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 4, 4, generator=g, dtype=torch.float64) * 2 + 1
    mp.spawn(_batch_norm_worker, args=(2, str(tmp_path / "init"), x), nprocs=2, join=True)
