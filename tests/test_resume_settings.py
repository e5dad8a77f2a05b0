"""A resumed run uses exactly the settings it was started with, and every run folder that holds a
checkpoint can be resumed: with a validation split, without one, and before any finite
validation NLL."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from realnvp.cli import main
from realnvp.errors import ConfigError
from realnvp.training import TrainConfig, callbacks, loop, train_run

SMALL = ["--steps", "40", "--eval-every", "10", "--layers", "2", "--hidden", "8"]
SMALL += ["--batch-size", "32", "--no-progress", "--patience", "100"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    rng = np.random.default_rng(0)
    np.save(path, np.c_[rng.standard_normal(200), rng.standard_normal(200) ** 2])
    return path


def interrupted(monkeypatch: pytest.MonkeyPatch, at_step: int) -> None:
    """Make the next run stop like a Ctrl-C right after its checkpoint at ``at_step``."""
    original = callbacks.TensorBoard.on_evaluation

    def stop(self, trainer, evaluation):
        original(self, trainer, evaluation)
        if trainer.step == at_step:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.TensorBoard, "on_evaluation", stop)


def train(data: Path, run: Path, *extra: str) -> int:
    return main(["train", str(data), "--out", str(run), *SMALL, *extra])


def weights(path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    tensors = load_file(str(path))
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def assert_same_run(a: Path, b: Path) -> None:
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    for name in ("model.safetensors", "last.safetensors"):
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x), name


@pytest.mark.parametrize("settings", [["--seed", "3", "--val-fraction", "0.2"], ["--seed", "3"]])
def test_resume_without_repeating_the_settings_uses_the_saved_split(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: list[str]
) -> None:
    # Bug: the data were split again with the resuming command's seed and val-fraction, so
    # validation rows landed in the training set and the curve after step 20 changed.
    assert train(data, tmp_path / "straight", *settings) == 0
    with monkeypatch.context() as m:
        interrupted(m, at_step=20)
        assert train(data, tmp_path / "resumed", *settings) == 130
    assert (tmp_path / "resumed" / "metrics.csv").read_text().count("\n") == 3  # header + 2
    assert train(data, tmp_path / "resumed", "--resume") == 0
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.parametrize(
    ("flag", "value", "saved"),
    [("--seed", "4", "3"), ("--val-fraction", "0.3", "0.1"), ("--lr", "0.01", "0.001")],
)
def test_resume_refuses_a_setting_that_contradicts_the_run(
    data: Path, tmp_path: Path, capsys, flag: str, value: str, saved: str
) -> None:
    run = tmp_path / "run"
    assert train(data, run, "--seed", "3") == 0
    before = (run / "last.safetensors").read_bytes()
    capsys.readouterr()
    assert train(data, run, "--resume", flag, value) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{flag} {saved}" in err and value in err
    assert (run / "last.safetensors").read_bytes() == before


def test_resume_accepts_the_same_settings_repeated_and_a_new_device(
    data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert train(data, run, "--seed", "3") == 0
    assert train(data, run, "--resume", "--seed", "3", "--device", "cpu") == 0


def test_a_run_without_validation_resumes_and_ends_with_its_last_weights(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bug: model.json was only written at the end, so a --val-fraction 0 run interrupted midway
    # could be neither resumed ("no model.json") nor restarted ("already holds a run").
    assert train(data, tmp_path / "straight", "--val-fraction", "0") == 0
    with monkeypatch.context() as m:
        interrupted(m, at_step=20)
        assert train(data, tmp_path / "resumed", "--val-fraction", "0") == 130
    assert (tmp_path / "resumed" / "model.json").exists()
    assert train(data, tmp_path / "resumed", "--resume") == 0
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")
    # the table recipe averages the weights (ema): without validation the model kept is the
    # last average, saved beside the raw weights in last.safetensors
    average = weights(tmp_path / "resumed" / "last.safetensors", "average.")
    final = weights(tmp_path / "resumed" / "model.safetensors")
    assert average and set(average) <= set(final)
    assert all(torch.equal(average[k], final[k]) for k in average)


def test_a_run_whose_validation_nll_is_never_finite_resumes(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "mean_nll", lambda flow, x, context=None: math.nan)
    with monkeypatch.context() as m:
        interrupted(m, at_step=20)
        assert train(data, tmp_path / "run") == 130
    assert train(data, tmp_path / "run", "--resume") == 0
    # no best weights: the model kept is the last average of the weights (the table recipe's ema)
    average = weights(tmp_path / "run" / "last.safetensors", "average.")
    final = weights(tmp_path / "run" / "model.safetensors")
    assert average and all(torch.equal(average[k], final[k]) for k in average)
    assert "best." not in "".join(load_file(str(tmp_path / "run" / "last.safetensors")))


def test_resume_of_a_folder_without_a_training_state_is_one_line(
    tmp_path: Path, data: Path, capsys
) -> None:
    (tmp_path / "empty").mkdir()
    assert train(data, tmp_path / "empty", "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "last.safetensors" in err


def scripted_validation(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    nlls = iter(values)
    monkeypatch.setattr(loop, "mean_nll", lambda flow, x, context=None: next(nlls))


def test_resuming_a_state_saved_without_its_best_weights_keeps_the_best_model(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training states written before they held the best weights: the best comes from
    model.safetensors, so later, worse evaluations do not overwrite it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with monkeypatch.context() as m:
        scripted_validation(m, [1.0, 0.5, 0.9, 0.9])
        assert train(data, tmp_path / "straight") == 0
    run = tmp_path / "old"
    with monkeypatch.context() as m:
        scripted_validation(m, [1.0, 0.5])
        original = callbacks.Checkpoint.on_evaluation

        def checkpoint_then_stop(self, trainer, evaluation):  # after the model files of step 20
            original(self, trainer, evaluation)
            if trainer.step == 20:
                raise KeyboardInterrupt

        m.setattr(callbacks.Checkpoint, "on_evaluation", checkpoint_then_stop)
        assert train(data, run) == 130
    path = str(run / "last.safetensors")
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    tensors = {k: v for k, v in load_file(path).items() if not k.startswith("best.")}
    save_file(tensors, path, metadata=metadata)  # as an older version wrote it
    with monkeypatch.context() as m:
        scripted_validation(m, [0.9, 0.9])
        assert train(data, run, "--resume") == 0
    best = weights(tmp_path / "straight" / "model.safetensors")
    resumed = weights(run / "model.safetensors")
    assert all(torch.equal(best[k], resumed[k]) for k in best)


@pytest.mark.parametrize("other", ["multiscale", "no-such-kind"])
def test_resume_refuses_a_model_of_another_kind(other: str, tmp_path: Path) -> None:
    """train_run(resume=True, model={"type": ...}) checks the kind like any other setting."""
    x = np.random.default_rng(0).normal(size=(100, 2))
    config = TrainConfig(steps=4, eval_every=2)
    train_run(tmp_path / "run", x, {"num_layers": 2, "hidden_features": 4}, config, device="cpu")
    with pytest.raises(ConfigError, match="type"):
        train_run(tmp_path / "run", x, {"type": other}, resume=True, device="cpu")


def test_resume_accepts_an_option_given_at_its_default_though_the_config_omits_it(
    tmp_path: Path,
) -> None:
    """A config leaves out options at their constructor defaults (masks, context_affine): giving
    one again at that value on resume is no conflict."""
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(100, 2)), rng.normal(size=(100, 1))
    model = {"num_layers": 2, "hidden_features": 4, "masks": "alternate", "context_affine": False}
    config = TrainConfig(steps=4, eval_every=2)
    train_run(tmp_path / "run", x, model, config, device="cpu", context=c)
    flow, _ = train_run(tmp_path / "run", x, model, resume=True, device="cpu", context=c)
    assert "context_affine" not in flow.config and "masks" not in flow.config
