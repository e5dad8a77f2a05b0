"""The moving average of the weights (``TrainConfig.ema``, Polyak averaging): what it averages,
that the validated average is what a run keeps and saves, and that resume carries it exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import fails, full_and_resumed
from realnvp import RealNVP
from realnvp.config import TrainConfig
from realnvp.errors import ConfigError
from realnvp.training import Callback, Trainer
from realnvp.training.checkpoint import CheckpointError, load_model, load_training_state
from realnvp.training.loop import fit, mean_nll
from realnvp.training.runs import train_run


def rows(n: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[rng.standard_normal(n), rng.standard_normal(n) ** 2]


def test_the_average_follows_its_warmed_up_decay() -> None:
    """After each step ``a <- d a + (1 - d) w`` with ``d = min(ema, (1 + t) / (10 + t))``,
    starting from the initial weights; and the trained flow ends holding that average. Fails if
    the decay or its warm-up is off, if the average started elsewhere, or if the run kept the
    raw weights."""
    torch.manual_seed(0)
    flow = RealNVP(2, num_layers=2, hidden_features=8)
    start = {k: p.detach().clone() for k, p in flow.named_parameters()}
    trajectory: list[dict[str, torch.Tensor]] = []

    class Record(Callback):
        def on_step(self, trainer: Trainer) -> None:
            trajectory.append({k: p.detach().clone() for k, p in flow.named_parameters()})

    config = TrainConfig(
        steps=30, batch_size=32, lr=1e-2, schedule="constant", eval_every=30, ema=0.8
    )
    x = torch.as_tensor(rows(), dtype=torch.float32)
    fit(flow, x[:448], x[448:], config, [Record()])

    expected = start
    for t, weights in enumerate(trajectory):
        d = min(0.8, (1 + t) / (10 + t))
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
    for k, p in flow.named_parameters():
        torch.testing.assert_close(p.detach(), expected[k], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(p.detach(), trajectory[-1][k]), k  # not the raw weights


def test_the_kept_model_is_the_average_that_was_validated() -> None:
    """Early stopping compares the average's validation NLL, and the flow returned is the
    average of the best evaluation: its NLL on the validation rows is the best one recorded.
    Fails if validation scored the raw weights while the average was kept, or the reverse."""
    torch.manual_seed(1)
    flow = RealNVP(2, num_layers=2, hidden_features=16)
    x = torch.as_tensor(rows(seed=1), dtype=torch.float32)
    config = TrainConfig(steps=200, batch_size=64, lr=5e-3, eval_every=10, patience=5, ema=0.9)
    history = fit(flow, x[:448], x[448:], config)
    assert mean_nll(flow.eval(), x[448:]) == pytest.approx(history.best_val_nll, abs=1e-6)


def test_a_run_folder_saves_the_average_as_its_model_and_both_for_resume(tmp_path: Path) -> None:
    """model.safetensors holds the validated average; last.safetensors the raw weights (to
    go on training from) and the average beside them. Fails if either file held the wrong one."""
    config = TrainConfig(steps=40, batch_size=64, eval_every=40, patience=None, ema=0.9)
    flow, _ = train_run(tmp_path / "run", rows(), {"num_layers": 2, "hidden_features": 8}, config)
    saved, *_ = load_model(tmp_path / "run")
    live, _, _, _, average = load_training_state(tmp_path / "run")
    assert average is not None
    for k, p in saved.named_parameters():
        assert torch.equal(p, average[k]), k
        assert torch.equal(p, dict(flow.named_parameters())[k]), k
    assert any(not torch.equal(p, average[k]) for k, p in live.named_parameters()), (
        "last.safetensors must hold the raw weights, not the average"
    )


def test_resume_carries_the_average_exactly(tmp_path: Path) -> None:
    """Stopped after the step-20 checkpoint and resumed, a run ends with the uninterrupted
    run's weights bit for bit. Fails if the average were not saved (resume would restart it
    from the raw weights) or its warm-up restarted."""
    x = rows()
    model = {"num_layers": 2, "hidden_features": 8}
    config = TrainConfig(steps=40, batch_size=64, eval_every=10, patience=None, ema=0.95)
    full, resumed = full_and_resumed(tmp_path, x, model, config, at=20)
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_a_damaged_average_is_refused(tmp_path: Path) -> None:
    """An average with a tensor of the wrong shape is refused on loading, not trained on."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    config = TrainConfig(steps=10, batch_size=64, eval_every=10, ema=0.9)
    train_run(tmp_path, rows(), {"num_layers": 2, "hidden_features": 8}, config)
    path = tmp_path / "last.safetensors"
    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    key = next(k for k in tensors if k.startswith("average."))
    tensors[key] = torch.zeros(3)
    save_file(tensors, path, meta)
    with pytest.raises(CheckpointError, match="moving average of other weights"):
        load_training_state(tmp_path)


def test_ema_must_be_a_decay() -> None:
    """A decay in [0, 1), 0 for none (as weight_decay's 0); None, 1 and out-of-range refused."""
    for bad in (None, 1.0, -0.5, 1.5):
        with pytest.raises(ConfigError, match="ema"):
            TrainConfig(ema=bad)


def test_tables_average_by_default_and_the_shell_can_turn_it_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A table's recipe averages the weights and decays them; ``--ema 0 --weight-decay 0``
    trains without either; ``--ema 1`` is refused in one line."""
    from realnvp.cli import main

    assert RealNVP.recipe_for((1000, 3)).ema == 0.995
    data = tmp_path / "x.npy"
    np.save(data, rows(300))
    common = ["--steps", "4", "--eval-every", "2", "--layers", "2", "--hidden", "8"]
    common += ["--no-progress"]
    off = ["--ema", "0", "--weight-decay", "0"]  # 0.2's recipe
    assert main(["train", str(data), "--out", str(tmp_path / "off"), *off, *common]) == 0
    assert main(["train", str(data), "--out", str(tmp_path / "on"), *common]) == 0
    _, _, state, _, average = load_training_state(tmp_path / "off")
    assert average is None and state["config"]["ema"] == 0
    assert state["config"]["weight_decay"] == 0
    _, _, state, _, average = load_training_state(tmp_path / "on")
    assert average is not None and state["config"]["weight_decay"] == 3e-3
    capsys.readouterr()
    bad = ["train", str(data), "--out", str(tmp_path / "bad"), "--ema", "1", *common]
    line = fails(bad, capsys)
    assert "--ema" in line and "[0, 1)" in line


def test_resume_refuses_another_ema_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run keeps its averaging on resume: ``--ema 0`` on an averaged run, and a decay on a run
    started without one (shown as ``--ema 0``), are refused in one line."""
    from realnvp.cli import main

    data = tmp_path / "x.npy"
    np.save(data, rows(300))
    common = ["--steps", "4", "--eval-every", "2", "--layers", "2", "--hidden", "8"]
    common += ["--no-progress"]
    on, off = str(tmp_path / "on"), str(tmp_path / "off")
    assert main(["train", str(data), "--out", on, *common]) == 0
    assert main(["train", str(data), "--out", off, "--ema", "0", *common]) == 0
    capsys.readouterr()
    line = fails(["train", str(data), "--out", on, "--resume", "--ema", "0", *common], capsys)
    assert "was started with --ema 0.995, not 0" in line
    line = fails(["train", str(data), "--out", off, "--resume", "--ema", "0.9", *common], capsys)
    assert "was started with --ema 0, not 0.9" in line


def test_the_estimator_takes_the_recipes_regularizers() -> None:
    """``RealNVPDensity(ema=..., weight_decay=...)`` reach the recipe: None is the sized
    default (the same fit as giving its values), ``ema=0, weight_decay=0`` another fit."""
    from realnvp import RealNVPDensity

    X = rows(400)
    common = {"num_layers": 2, "hidden_features": 8, "steps": 30, "random_state": 0}
    default = RealNVPDensity(**common).fit(X).score_samples(X)
    given = RealNVPDensity(ema=0.995, weight_decay=3e-3, **common).fit(X).score_samples(X)
    off = RealNVPDensity(ema=0, weight_decay=0, **common).fit(X).score_samples(X)
    np.testing.assert_array_equal(default, given)
    assert not np.allclose(default, off)
