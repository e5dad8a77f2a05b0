"""Checkpoints survive a crash: a run killed with SIGKILL and resumed ends with the same weights
as one that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from realnvp import RealNVP
from realnvp.training.checkpoint import (
    CheckpointError,
    load_model,
    load_training_state,
    save_model,
)

ARGS = [
    "--steps",
    "400",
    "--eval-every",
    "20",
    "--layers",
    "4",
    "--hidden",
    "32",
    "--batch-size",
    "64",
    "--patience",
    "1000",
    "--no-progress",
    "--seed",
    "3",
]


def train(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "realnvp", "train", str(data), "--out", str(out), *ARGS, *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def steps_done(run: Path) -> int:
    """The last step in the run's metrics.csv (written atomically at each evaluation)."""
    try:
        lines = (run / "metrics.csv").read_text().strip().splitlines()
    except FileNotFoundError:
        return 0
    return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "x.npy"
    rng = np.random.default_rng(0)
    np.save(path, np.c_[rng.standard_normal(2000), rng.standard_normal(2000) ** 2])
    return path


@pytest.mark.slow
def test_killed_and_resumed_run_matches_an_uninterrupted_one(data: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    assert train(data, straight).wait(timeout=600) == 0

    crashed = tmp_path / "crashed"
    process = train(data, crashed)
    deadline = time.monotonic() + 300
    while steps_done(crashed) < 100 and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("the run finished before it could be killed; make it longer")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = steps_done(crashed)
    assert 100 <= killed_at < 400
    load_model(crashed)  # what was on disk at the kill is a valid checkpoint

    resumed = train(data, crashed, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()

    for name in ("last.safetensors", "model.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(crashed / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert (straight / "metrics.csv").read_text() == (crashed / "metrics.csv").read_text()


def test_resume_refuses_other_data(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(data, run).wait(timeout=600) == 0
    other = tmp_path / "other.npy"
    np.save(other, np.random.default_rng(5).standard_normal((2000, 2)))
    process = train(other, run, "--resume")
    assert process.wait(timeout=600) == 2
    assert b"other data" in process.stderr.read()


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    flow = RealNVP(3, num_layers=3, hidden_features=8, standardize=True)
    for p in flow.parameters():
        p.data.normal_()
    flow.set_standardization(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 2.0]))
    save_model(tmp_path, flow, {"data": {"rows": 1}})
    loaded, config = load_model(tmp_path)
    x = torch.randn(10, 3)
    assert torch.equal(loaded.log_prob(x), flow.log_prob(x))
    assert config["data"] == {"rows": 1} and not loaded.training


def test_atomic_write_keeps_the_old_checkpoint_when_writing_fails(
    tmp_path: Path, monkeypatch
) -> None:
    flow = RealNVP(2, num_layers=2, hidden_features=8)
    save_model(tmp_path, flow, {})
    before = (tmp_path / "model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("realnvp.training.checkpoint.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model(tmp_path, RealNVP(2, num_layers=2, hidden_features=8), {})
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_training_state_missing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_training_state(tmp_path)
