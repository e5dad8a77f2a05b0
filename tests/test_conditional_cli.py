"""Conditional models on the command line, end to end on small data: a table conditioned on
named columns, and a class-conditional image model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import fails
from realnvp.cli import main
from realnvp.training.checkpoint import load_model

STEPS = ["--steps", "40", "--eval-every", "20", "--no-progress", "--layers", "2", "--hidden", "16"]


def write_table(path: Path, n: int = 600, seed: int = 0) -> np.ndarray:
    """Columns age, x1, income, x2: x1 follows age, x2's spread follows income."""
    rng = np.random.default_rng(seed)
    age, income = rng.normal(40, 10, n), rng.normal(5, 2, n)
    x1 = age / 10 + 0.1 * rng.normal(size=n)
    x2 = np.exp((income - 5) / 4) * rng.normal(size=n)
    table = np.c_[age, x1, income, x2]
    np.savetxt(path, table, delimiter=",", header="age,x1,income,x2", comments="")
    return table


def read(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    return lines[0].split(","), np.loadtxt(lines[1:], delimiter=",", ndmin=2)


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("conditional")
    data = folder / "data.csv"
    table = write_table(data)
    run = folder / "run"
    assert main(["train", str(data), "--context", "age,income", "--out", str(run), *STEPS]) == 0
    return run, data, table


def test_the_run_models_the_other_columns_given_the_context(table_run, tmp_path, capsys) -> None:
    run, data, table = table_run
    flow, config = load_model(run)
    assert flow.event_shape == (2,) and flow.context_shape == (2,)
    assert config["data"]["context_columns"] == {
        "width": 4,
        "context": [0, 2],
        "names": ["age", "x1", "income", "x2"],
    }
    capsys.readouterr()
    assert main(["eval", str(run), str(data), "--json"]) == 0
    nll = json.loads(capsys.readouterr().out)["nll"]
    x, c = flow.as_input(table[:, [1, 3]]), table[:, [0, 2]]
    with torch.no_grad():
        assert nll == pytest.approx(-flow.log_prob(x, c).mean().item(), rel=1e-9)
    assert main(["score", str(run), str(data), "-o", str(tmp_path / "s.csv")]) == 0
    header, scores = read(tmp_path / "s.csv")
    assert header == ["log_prob"] and np.allclose(scores[:, 0], -(-flow.log_prob(x, c)).detach())


def test_encode_and_decode_keep_the_context_columns_in_place(table_run, tmp_path) -> None:
    run, data, table = table_run
    assert main(["encode", str(run), str(data), "-o", str(tmp_path / "z.csv")]) == 0
    header, z = read(tmp_path / "z.csv")
    assert header == ["age", "z1", "income", "z2"]
    assert np.allclose(z[:, [0, 2]], table[:, [0, 2]], rtol=1e-8)
    assert not np.allclose(z[:, [1, 3]], table[:, [1, 3]], atol=1e-2)
    assert main(["decode", str(run), str(tmp_path / "z.csv"), "-o", str(tmp_path / "x.csv")]) == 0
    header, x = read(tmp_path / "x.csv")
    assert header == ["age", "x1", "income", "x2"]
    assert np.allclose(x, table, atol=1e-4)


def test_samples_carry_their_context(table_run, tmp_path) -> None:
    run, _, _ = table_run
    out = tmp_path / "one.csv"
    assert main(["sample", str(run), "--context", "30,9", "-n", "5", "-o", str(out)]) == 0
    header, x = read(out)
    assert header == ["age", "x1", "income", "x2"] and x.shape == (5, 4)
    assert np.all(x[:, 0] == 30) and np.all(x[:, 2] == 9)
    contexts = tmp_path / "ctx.csv"
    contexts.write_text("age,income\n20,5\n60,5\n")
    out = tmp_path / "many.csv"
    assert (
        main(["sample", str(run), "--context-file", str(contexts), "-n", "3", "-o", str(out)]) == 0
    )
    header, x = read(out)
    assert header == ["row", "age", "x1", "income", "x2"] and x.shape == (6, 5)
    assert x[:, 0].tolist() == [1, 1, 1, 2, 2, 2] and x[:, 1].tolist() == [20] * 3 + [60] * 3


def test_columns_by_number_are_the_same_run(table_run, tmp_path) -> None:
    run, data, _ = table_run
    again = tmp_path / "again"
    assert main(["train", str(data), "--context", "1,3", "--out", str(again), *STEPS]) == 0
    first, second = (json.loads((r / "model.json").read_text())["data"] for r in (run, again))
    assert first == second


@pytest.mark.parametrize(
    "args, message",
    [
        (["--context", "1.5"], "--context: 1 value; the model takes 2 (age, income)"),
        (["--context", "1,inf"], "--context: inf is not a finite number"),
        (["--context", "a,b"], "--context: 'a,b' is not a list of numbers"),
        ([], "is conditional on age, income; give --context VALUES or --context-file FILE"),
        (["--label", "3"], "--label: "),  # a table model takes no label
    ],
)
def test_bad_sample_contexts_get_one_line(table_run, capsys, args, message) -> None:
    run, _, _ = table_run
    line = fails(["sample", str(run), "-n", "2", "-o", "-", *args], capsys)
    assert message in line


def test_bad_context_columns_get_one_line(table_run, tmp_path, capsys) -> None:
    run, data, _ = table_run
    out = str(tmp_path / "r")
    line = fails(["train", str(data), "--context", "agee", "--out", out, *STEPS], capsys)
    assert "no column 'agee' (its columns are age, x1, income, x2, or numbers 1 to 4)" in line
    line = fails(["train", str(data), "--context", "1,2,3", "--out", out, *STEPS], capsys)
    assert "leaves 1 to model; Real NVP needs at least 2" in line
    line = fails(["train", "moons", "--context", "1", "--out", out, *STEPS], capsys)
    assert "a built-in data set has no context columns" in line
    narrow = tmp_path / "narrow.csv"
    narrow.write_text("age,x1,income\n1,2,3\n4,5,6\n")
    line = fails(["eval", str(run), str(narrow)], capsys)
    assert "has 3 columns, the model expects 4" in line
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("a,b,c,d\n1,2,3,4\n4,5,6,7\n")
    line = fails(["eval", str(run), str(renamed)], capsys)
    assert "its columns are a, b, c, d; the model was trained on age, x1, income, x2" in line
    bad = tmp_path / "bad.csv"
    bad.write_text("age,x1,income,x2\n1,2,nan,4\n4,5,6,7\n")
    line = fails(["score", str(run), str(bad), "-o", "-"], capsys)
    assert "row 2, column 3 is nan" in line


def test_an_unconditional_run_refuses_a_context(tmp_path, capsys) -> None:
    run = tmp_path / "plain"
    assert main(["train", "moons", "--n", "300", "--out", str(run), *STEPS]) == 0
    capsys.readouterr()
    line = fails(["sample", str(run), "-n", "2", "-o", "-", "--context", "1,2"], capsys)
    assert line.endswith("--context: " + f"{run} is not a conditional model")


@pytest.mark.slow
def test_a_class_conditional_image_model_end_to_end(tmp_path, capsys) -> None:
    run = tmp_path / "digits"
    small = ["--channels", "4", "--blocks", "1", "--steps", "6", "--eval-every", "3"]
    assert (
        main(["train", "digits", "--conditional", "--out", str(run), "--no-progress", *small]) == 0
    )
    capsys.readouterr()
    flow, config = load_model(run)
    assert flow.num_classes == 10 and config["data"]["conditional"] is True
    out = tmp_path / "threes.npy"
    assert main(["sample", str(run), "--label", "3", "-n", "4", "-o", str(out)]) == 0
    assert np.load(out).shape == (4, 1, 8, 8)
    assert "give --label (0 to 9)" in fails(["sample", str(run), "-n", "2", "-o", str(out)], capsys)
    line = fails(["sample", str(run), "--label", "10", "-n", "2", "-o", str(out)], capsys)
    assert line.endswith("--label: 10; the model's labels are 0 to 9")
    capsys.readouterr()
    assert main(["plot", str(run), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "samples.png").stat().st_size > 0
    assert main(["audit", str(run), "digits"]) == 0
    line = fails(["train", "digits", "--context", "1", "--out", str(tmp_path / "x")], capsys)
    assert "images condition on their labels with --conditional" in line


def test_a_context_run_starts_with_a_context_affine_unless_told_not_to(
    table_run, tmp_path, capsys
) -> None:
    run, data, _ = table_run
    _, config = load_model(run)
    assert config["model"]["context_affine"] is True and config["model"]["coupling"] == "spline"
    off = tmp_path / "off"
    args = ["train", str(data), "--context", "age,income", "--no-context-affine", "--out"]
    assert main([*args, str(off), *STEPS]) == 0
    assert "context_affine" not in load_model(off)[1]["model"]
    capsys.readouterr()
    line = fails(
        ["train", str(data), "--context-affine", "--out", str(tmp_path / "no"), *STEPS], capsys
    )
    assert line == "realnvp train: error: --context-affine: needs a context (context_features > 0)"
