"""Bad input: one clear line on stderr naming what and where, exit code 2, no traceback, and
nothing good on disk overwritten."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import fails
from realnvp import RealNVP
from realnvp.cli import main
from realnvp.training import Checkpoint, Evaluation, TrainConfig, Trainer
from realnvp.training.checkpoint import load_model

SMALL = [
    "--steps",
    "20",
    "--eval-every",
    "10",
    "--layers",
    "2",
    "--hidden",
    "8",
    "--batch-size",
    "64",
    "--no-progress",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data") / "good.csv"
    np.savetxt(data, np.random.default_rng(0).standard_normal((200, 2)), delimiter=",")
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", str(data), "--out", str(out), *SMALL]) == 0
    return out


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- data files ----------------------------------------------------------------------------
def test_missing_file(tmp_path: Path, capsys) -> None:
    line = fails(
        ["train", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "r"), *SMALL], capsys
    )
    assert "nope.csv: no such file" in line


def test_empty_file(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "empty.csv", "")
    assert "empty.csv: the file is empty" in fails(
        ["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys
    )


def test_non_numeric_cell_names_row_and_column(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "bad.csv", "a,b\n1,2\n3,4\n5,oops\n7,8\n")
    line = fails(["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys)
    assert "bad.csv: row 4, column 2: 'oops' is not a number" in line


def test_nan_names_the_row_and_drop_nonfinite_skips_it(tmp_path: Path, capsys) -> None:
    rows = "\n".join(f"{i},{i % 7}" for i in range(50))
    path = write(tmp_path / "nan.csv", f"x,y\n{rows}\n3,nan\n4,inf\n")
    line = fails(["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys)
    assert "nan.csv: row 52, column 2 is nan" in line and "--drop-nonfinite" in line
    out = tmp_path / "r2"
    assert main(["train", str(path), "--out", str(out), "--drop-nonfinite", *SMALL]) == 0
    assert load_model(out)[1]["data"]["rows"] == 50


def test_ragged_rows(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "ragged.csv", "1,2\n3,4,5\n")
    assert "row 2 has 3 columns, expected 2" in fails(
        ["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys
    )


def test_one_row_is_too_few_to_train(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "one.csv", "x,y\n1,2\n")
    assert "1 usable row, at least 2 needed" in fails(
        ["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys
    )


def test_one_column_is_too_few_to_couple(tmp_path: Path, capsys) -> None:
    path = tmp_path / "one.npy"
    np.save(path, np.arange(10.0))
    assert "needs at least 2" in fails(
        ["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys
    )


def test_pickled_npy_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    assert "pickle" in fails(["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys)


def test_wrong_number_of_columns_for_the_model(run: Path, tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "three.csv", "1,2,3\n4,5,6\n")
    line = fails(["score", str(run), str(path), "-o", str(tmp_path / "s.csv")], capsys)
    assert "three.csv: has 3 columns, the model expects 2" in line


# -- checkpoints ---------------------------------------------------------------------------
def copy_run(run: Path, to: Path) -> Path:
    to.mkdir()
    for f in run.iterdir():
        if f.is_file():
            (to / f.name).write_bytes(f.read_bytes())
    return to


def test_checkpoint_from_another_model(run: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other"
    data = tmp_path / "d.csv"
    np.savetxt(data, np.random.default_rng(1).standard_normal((100, 2)), delimiter=",")
    assert (
        main(
            ["train", str(data), "--out", str(other), *SMALL[:-5], "--layers", "3", "--no-progress"]
        )
        == 0
    )
    capsys.readouterr()
    mixed = copy_run(run, tmp_path / "mixed")
    (mixed / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    line = fails(["sample", str(mixed), "-n", "3", "-o", "-"], capsys)
    assert "different models" in line or "another model" in line


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "pickle"])
def test_damaged_checkpoint(run: Path, tmp_path: Path, capsys, damage: str) -> None:
    broken = copy_run(run, tmp_path / damage)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt":
        weights.write_bytes(b"\xff" * 64 + data[64:])
    else:
        torch.save(RealNVP(2, num_layers=2, hidden_features=8).state_dict(), weights)
    line = fails(["sample", str(broken), "-n", "3", "-o", "-"], capsys)
    assert "model.safetensors" in line and "not a readable safetensors checkpoint" in line


def test_loading_a_pickle_never_runs_its_code(run: Path, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    broken = copy_run(run, tmp_path / "exploit")
    (broken / "model.safetensors").write_bytes(pickle.dumps(Exploit()))
    fails(["eval", str(broken), "moons", "--n", "10"], capsys)
    assert not marker.exists()


def test_not_a_run_folder(tmp_path: Path, capsys) -> None:
    assert "no such run folder" in fails(
        ["sample", str(tmp_path / "x"), "-n", "2", "-o", "-"], capsys
    )


# -- outputs and arguments -----------------------------------------------------------------
def test_unwritable_output_leaves_nothing_broken(run: Path, tmp_path: Path, capsys) -> None:
    line = fails(
        ["sample", str(run), "-n", "3", "-o", str(tmp_path / "no" / "dir" / "s.csv")], capsys
    )
    assert "cannot write" in line


def test_existing_output_survives_a_failed_command(run: Path, tmp_path: Path, capsys) -> None:
    out = write(tmp_path / "keep.csv", "precious\n")
    bad = write(tmp_path / "bad.csv", "1,x\n")
    fails(["score", str(run), str(bad), "-o", str(out)], capsys)
    assert out.read_text() == "precious\n"


def test_training_into_an_existing_run_is_refused(run: Path, capsys) -> None:
    before = (run / "model.safetensors").read_bytes()
    line = fails(["train", "moons", "--out", str(run), *SMALL], capsys)
    assert "already holds a run" in line and "--resume" in line
    assert (run / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "moons", "--out", "X", "--steps", "-3"], "--steps: must be at least 1"),
        (["train", "moons", "--out", "X", "--layers", "0"], "--layers: must be at least 1"),
        (["train", "moons", "--out", "X", "--lr", "abc"], "--lr: expected a number"),
        (["train", "moons", "--out", "X", "--val-fraction", "1.5"], "must be in [0, 1)"),
        (["sample", "X", "-n", "3", "--temperature", "0", "-o", "-"], "must be a positive"),
        (["sample", "X", "-n", "0", "-o", "-"], "must be at least 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_nonsense_arguments(args: list[str], message: str, capsys) -> None:
    assert message in fails(args, capsys)


# -- a loss that turns NaN -----------------------------------------------------------------
def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    flow = RealNVP(2, num_layers=2, hidden_features=8)
    calls = {"n": 0}
    original = flow.log_prob

    def log_prob(x):
        calls["n"] += 1
        out = original(x)
        return out * float("nan") if calls["n"] > 40 and flow.training else out

    flow.log_prob = log_prob
    saved = []

    class Recorded(Checkpoint):
        def on_evaluation(self, trainer: Trainer, evaluation: Evaluation) -> None:
            super().on_evaluation(trainer, evaluation)
            saved.append(trainer.step)

    trainer = Trainer(
        flow,
        torch.randn(500, 2),
        torch.randn(50, 2),
        TrainConfig(steps=100, batch_size=50, eval_every=10),
        callbacks=[Recorded(tmp_path, {})],
    )
    with pytest.raises(FloatingPointError, match=r"at step 3[0-9]"):
        trainer.fit()
    from realnvp.training.checkpoint import load_training_state

    _, _, state, _, _ = load_training_state(tmp_path)
    assert state["step"] == 30 and saved and max(saved) <= 30


def test_nan_loss_exits_with_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(
        RealNVP, "log_prob", lambda self, x: torch.full((x.shape[0],), float("nan"))
    )
    line = fails(
        ["train", "moons", "--n", "200", "--out", str(tmp_path / "r"), *SMALL], capsys, code=1
    )
    assert "at step 1" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["digits", "--scales", "5"], "--scales: 5 scales need height and width divisible by 16"),
        (["digits", "--scales", "4"], "--scales: the last scale would be 1x1"),
        (["moons", "--n", "100", "--device", "cuda"], "--device: 'cuda' was asked for"),
    ],
)
def test_a_setting_the_library_refuses_is_named_by_its_flag(
    args: list[str], message: str, tmp_path: Path, capsys
) -> None:
    """The library names the parameter (num_scales, device); the command line names the flag."""
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    line = fails(["train", *args, "--out", str(tmp_path / "r"), "--no-progress"], capsys)
    assert message in line and "num_scales" not in line
