"""The command line on an image run, end to end on a tiny model: train, eval (bits/dim),
sample (PNG and .npy), plot, audit, resume, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import fails, full_and_resumed
from realnvp.cli import main
from realnvp.data.images import digits
from realnvp.training import TrainConfig
from realnvp.training.checkpoint import load_model

TINY = ["--scales", "2", "--channels", "4", "--blocks", "1", "--eval-every", "10"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert (
        main(["train", "digits", "--out", str(out), "--steps", "40", *TINY, "--no-progress"]) == 0
    )
    return out


def test_train_writes_bits_per_dim(run: Path) -> None:
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,train_nll,val_nll,lr,train_bpd,val_bpd"
    step, _, val_nll, _, _, val_bpd = map(float, lines[-1].split(","))
    assert step == 40 and val_bpd == pytest.approx(val_nll / (64 * np.log(2)))
    _, config = load_model(run)
    assert config["model"]["type"] == "multiscale" and config["model"]["levels"] == 17
    assert config["train"]["grad_clip"] == 100.0 and config["train"]["scale_l2"] == 5e-5


def test_eval_json_reports_bits_per_dim_on_the_test_split(run: Path, capsys) -> None:
    assert main(["eval", str(run), "digits", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 297
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (64 * np.log(2)))
    assert 0 < result["bits_per_dim"] < np.log2(17) + 1


def test_sample_writes_png_and_npy(run: Path, tmp_path: Path) -> None:
    assert main(["sample", str(run), "-n", "9", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["sample", str(run), "-n", "5", "-o", str(tmp_path / "s.npy")]) == 0
    grey = np.load(tmp_path / "s.npy")
    assert grey.shape == (5, 1, 8, 8) and grey.dtype == np.uint8 and grey.max() <= 16


def test_plot_writes_the_three_figures(run: Path, tmp_path: Path) -> None:
    assert main(["plot", str(run), "--out", str(tmp_path / "fig")]) == 0
    for name in ("samples.png", "reconstructions.png", "manifold.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 1000


def test_audit_passes(run: Path, capsys) -> None:
    assert main(["audit", str(run), "digits"]) == 0
    assert capsys.readouterr().out.count(": ok") == 2


def test_refusals(run: Path, tmp_path: Path, capsys) -> None:
    line = fails(["sample", str(run), "-n", "2", "-o", str(tmp_path / "s.csv")], capsys)
    assert "a .png grid or a .npy array" in line
    line = fails(["encode", str(run), "digits", "-o", str(tmp_path / "z.csv")], capsys)
    assert "is an image model" in line
    line = fails(["train", str(tmp_path), "--out", str(tmp_path / "r")], capsys)
    assert "no train-images-idx3-ubyte" in line


def test_eval_refuses_images_of_another_shape(run: Path, tmp_path: Path, capsys) -> None:
    header = b"".join(v.to_bytes(4, "big") for v in (2051, 2, 28, 28))
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / name).write_bytes(header + bytes(2 * 28 * 28))
    line = fails(["eval", str(run), str(tmp_path)], capsys)
    assert "images of shape (1, 28, 28) with 256 grey levels" in line
    assert "the model expects shape (1, 8, 8) with 17 levels" in line


def test_eval_refuses_images_with_other_grey_levels(run: Path, tmp_path: Path, capsys) -> None:
    """8x8 images of 256 grey levels on a 17-level model: the shape fits and every pixel (0)
    is below 17, but bits/dim would be meaningless, so the levels must match too."""
    header = b"".join(v.to_bytes(4, "big") for v in (2051, 2, 8, 8))
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / name).write_bytes(header + bytes(2 * 8 * 8))
    line = fails(["eval", str(run), str(tmp_path)], capsys)
    assert "with 256 grey levels; the model expects shape (1, 8, 8) with 17 levels" in line


@pytest.mark.slow
def test_image_resume_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop after the step-20 checkpoint, resume, and land on the uninterrupted run's weights:
    the dequantization noise and the batch norms' running averages are resumed too."""
    x = digits().train[:256]
    model = {"type": "multiscale", "levels": 17, "hidden_channels": 4, "num_blocks": 1}
    config = TrainConfig(steps=40, batch_size=32, eval_every=10, grad_clip=100.0, scale_l2=5e-5)
    full, resumed = full_and_resumed(tmp_path, x, model, config, at=20)
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
