"""Run folders written by realnvp 0.1.0 (``tests/data/runs-0.1.0``, made by the commands in its
``expected.json``) still load, evaluate to the figures 0.1.0 printed, and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import realnvp.nn
from realnvp.cli import main
from realnvp.models import MultiScaleRealNVP, RealNVP
from realnvp.training.checkpoint import load_model, load_training_state

OLD = Path(__file__).parent / "data" / "runs-0.1.0"
EXPECTED = json.loads((OLD / "expected.json").read_text())
KINDS = {"table": RealNVP, "image": MultiScaleRealNVP}
# float32 models: another CPU's kernels may round differently in the last bits (on the machine
# that wrote them the figures come back bit for bit), and a few training steps carry that on
REL = {"table": 1e-6, "image": 1e-5}
TRAIN_REL = {"table": 1e-5, "image": 1e-4}
# 0.3.0 chose a table's coupling and batch from its size and regularizes it (moving average,
# weight decay); 0.1.0's fixed settings, given again
OLD_DEFAULTS = {
    "table": ["--coupling", "affine", "--batch-size", "512", "--ema", "0", "--weight-decay", "0"],
    "image": [],
}


@pytest.mark.parametrize("name", KINDS)
def test_an_old_run_loads_as_its_kind(name: str) -> None:
    flow, config = load_model(OLD / name)
    assert type(flow) is KINDS[name]
    assert "type" not in config["model"] or config["model"]["type"] == flow.kind
    state_flow, _, state, best, _ = load_training_state(OLD / name)
    assert type(state_flow) is KINDS[name] and best is not None and state["step"] > 0


@pytest.mark.parametrize("name", KINDS)
def test_an_old_run_evaluates_to_its_old_figures(name: str, capsys) -> None:
    expected = EXPECTED[name]
    assert main(["eval", str(OLD / name), *expected["eval_args"], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result.keys() == expected["eval"].keys()
    for key, value in expected["eval"].items():
        if isinstance(value, float):
            assert result[key] == pytest.approx(value, rel=REL[name]), key
        else:
            assert result[key] == value, key


@pytest.mark.parametrize("name", KINDS)
def test_an_old_run_resumes(name: str, tmp_path: Path, capsys) -> None:
    """Resuming a finished old run trains no further and rewrites its files in today's format,
    which load to the same model."""
    run = tmp_path / name
    shutil.copytree(OLD / name, run)
    data = EXPECTED[name]["eval_args"][0]
    rows = ["--n", "200"] if name == "table" else []
    assert main(["train", data, *rows, "--out", str(run), "--resume", "--no-progress"]) == 0
    capsys.readouterr()
    before, _ = load_model(OLD / name)
    after, config = load_model(run)
    assert config["model"]["type"] == after.kind
    assert all((before.state_dict()[k] == v).all() for k, v in after.state_dict().items())


@pytest.fixture
def two_threads():
    """The old runs were made with 2 torch threads, whose kernels' sums round in their own
    order; the suite's workers compute on 1 (tests/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", KINDS)
def test_the_same_command_trains_to_the_same_numbers_as_0_1_0(
    name: str, tmp_path: Path, monkeypatch, two_threads
) -> None:
    """Rerun the command that wrote the old run, with 0.1.0's defaults where they have changed:
    the same seeds give the same metrics (float32 models, so to the last bits another CPU's
    kernels may round differently). 0.1.0 convolved in NCHW, whose kernels round otherwise
    than today's channels-last ones (enough to move bits/dim by 1e-4 after 4 Adam steps)."""
    monkeypatch.setattr(realnvp.nn, "CONV_MEMORY_FORMAT", torch.contiguous_format)
    command = EXPECTED["made_by"]["commands"][0 if name == "table" else 1].split()
    args = [a if a != name else str(tmp_path / name) for a in command[1:]] + OLD_DEFAULTS[name]
    assert main(args) == 0
    old = (OLD / name / "metrics.csv").read_text().splitlines()
    new = (tmp_path / name / "metrics.csv").read_text().splitlines()
    assert new[0] == old[0] and len(new) == len(old)
    for a, b in zip(old[1:], new[1:], strict=True):
        assert [float(v) for v in b.split(",")] == pytest.approx(
            [float(v) for v in a.split(",")], rel=TRAIN_REL[name]
        )
