"""Every command end to end on small data: train, eval, score, sample, encode, decode, audit."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from realnvp.cli import main
from realnvp.data.tabular import column_names
from realnvp.training.checkpoint import load_model

SMALL = [
    "--steps",
    "60",
    "--eval-every",
    "20",
    "--layers",
    "2",
    "--hidden",
    "16",
    "--batch-size",
    "128",
    "--no-progress",
]


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    header = path.read_text().splitlines()[0].split(",")
    return header, np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-column CSV with a header: a correlated Gaussian."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 3)) @ np.array(
        [[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 2.0]]
    ) + [10.0, -3.0, 0.5]
    path = tmp_path_factory.mktemp("data") / "table.csv"
    np.savetxt(path, x, delimiter=",", header="a,b,c", comments="")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, table: Path) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", str(table), "--out", str(out), *SMALL]) == 0
    return out


def test_train_writes_a_loadable_run(run: Path) -> None:
    for name in ("model.safetensors", "model.json", "last.safetensors", "metrics.csv"):
        assert (run / name).exists(), name
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert metrics[0] == "step,train_nll,val_nll,lr" and len(metrics) == 4
    flow, config = load_model(run)
    assert config["model"]["features"] == 3 and config["data"]["rows"] == 600
    assert flow.config["num_layers"] == 2


def test_train_on_a_builtin_data_set(tmp_path: Path) -> None:
    out = tmp_path / "moons"
    assert main(["train", "moons", "--n", "500", "--out", str(out), *SMALL]) == 0
    assert load_model(out)[1]["data"]["source"] == "moons"


def test_eval_json_reports_nll_in_data_units(run: Path, table: Path, capsys) -> None:
    assert main(["eval", str(run), str(table), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 600 and result["nll_se"] > 0
    flow, _ = load_model(run)
    x = torch.as_tensor(np.loadtxt(table, delimiter=",", skiprows=1), dtype=torch.float32)
    with torch.no_grad():
        assert result["nll"] == pytest.approx(-flow.log_prob(x).mean().item(), rel=1e-5)
    # The data sit near (10, -3, 0.5) with stds about 1-2: a density in raw units, not
    # standardized ones, is what makes this NLL match a Gaussian fit's order of magnitude.
    assert 3.0 < result["nll"] < 8.0


def test_score_matches_log_prob(run: Path, table: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    assert main(["score", str(run), str(table), "-o", str(out)]) == 0
    header, scores = read_csv(out)
    assert header == ["log_prob"] and scores.shape == (600, 1)
    flow, _ = load_model(run)
    x = torch.as_tensor(np.loadtxt(table, delimiter=",", skiprows=1), dtype=torch.float32)
    with torch.no_grad():
        np.testing.assert_allclose(scores[:, 0], flow.log_prob(x).numpy(), rtol=1e-6, atol=1e-6)


def test_encode_then_decode_round_trips(run: Path, table: Path, tmp_path: Path) -> None:
    z_path, x_path = tmp_path / "z.csv", tmp_path / "x.csv"
    assert main(["encode", str(run), str(table), "-o", str(z_path)]) == 0
    assert main(["decode", str(run), str(z_path), "-o", str(x_path)]) == 0
    header, x = read_csv(x_path)
    assert header == ["a", "b", "c"]  # the training file's own names
    np.testing.assert_allclose(x, np.loadtxt(table, delimiter=",", skiprows=1), atol=1e-4)
    _, z = read_csv(z_path)
    assert abs(z.mean()) < 0.5 and 0.5 < z.std() < 1.5  # roughly standard normal


def test_sample_is_seeded_and_tempered(run: Path, tmp_path: Path) -> None:
    paths = [tmp_path / f"s{i}.csv" for i in range(3)]
    assert main(["sample", str(run), "-n", "2000", "--seed", "7", "-o", str(paths[0])]) == 0
    assert main(["sample", str(run), "-n", "2000", "--seed", "7", "-o", str(paths[1])]) == 0
    assert (
        main(
            [
                "sample",
                str(run),
                "-n",
                "2000",
                "--seed",
                "7",
                "--temperature",
                "0.5",
                "-o",
                str(paths[2]),
            ]
        )
        == 0
    )
    a, b, cold = (read_csv(p)[1] for p in paths)
    assert a.shape == (2000, 3) and np.array_equal(a, b)
    assert cold.std(0).sum() < a.std(0).sum()


def test_output_to_stdout(run: Path, capsys) -> None:
    assert main(["sample", str(run), "-n", "5", "-o", "-"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "a,b,c" and len(lines) == 6


def test_audit_passes_on_a_trained_model(run: Path, table: Path, capsys) -> None:
    assert main(["audit", str(run), str(table)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok") == 2


def test_audit_fails_when_the_tolerance_is_impossible(run: Path, capsys) -> None:
    assert main(["audit", str(run), "--inverse-tol", "1e-30"]) == 1
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.slow
def test_entry_point_and_module_both_work() -> None:
    for cmd in (["realnvp"], [sys.executable, "-m", "realnvp"]):
        exe = Path(sys.executable).parent / "realnvp" if cmd == ["realnvp"] else None
        full = [str(exe)] if exe is not None else cmd
        result = subprocess.run([*full, "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0
        for command in ("train", "eval", "score", "sample", "encode", "decode", "audit", "plot"):
            assert command in result.stdout


@pytest.mark.parametrize(
    "command", ["train", "eval", "score", "sample", "encode", "decode", "audit", "study", "plot"]
)
def test_every_command_has_help_with_an_example(command: str, capsys) -> None:
    assert main([command, "--help"]) == 0
    assert "example:" in capsys.readouterr().out


def test_score_refuses_a_table_whose_header_names_other_columns(
    run: Path, table: Path, tmp_path: Path, capsys
) -> None:
    """The run trained on columns a, b, c: a file with the same width but columns b, a, c
    would be scored with its columns swapped, silently; it is refused with both headers."""
    swapped = tmp_path / "swapped.csv"
    lines = table.read_text().splitlines()
    swapped.write_text("\n".join(["b,a,c", *lines[1:]]) + "\n")
    out = tmp_path / "scores.csv"
    assert main(["score", str(run), str(swapped), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "b, a, c" in err and "a, b, c" in err and not out.exists()


def _train_small(path: Path, out: Path) -> None:
    assert main(["train", str(path), "--out", str(out), *SMALL]) == 0


@pytest.mark.parametrize(
    "header",
    [
        '"price, usd",b,c',  # a name holding the delimiter, quoted in the file
        "\ufeffa,b,c",  # a byte-order mark, as Excel's 'CSV UTF-8' writes
    ],
)
def test_a_runs_own_output_reads_back(header: str, table: Path, tmp_path: Path) -> None:
    """Samples of a run trained on a file with a header are written with that header, and
    score as rows of the same table: the names survive quoting, and a byte-order mark is not
    part of the first name (so a file without one is the same table)."""
    data = tmp_path / "data.csv"
    data.write_text("\n".join([header, *table.read_text().splitlines()[1:]]) + "\n")
    run, samples, plain = tmp_path / "run", tmp_path / "samples.csv", tmp_path / "plain.csv"
    _train_small(data, run)
    assert main(["sample", str(run), "-n", "5", "--seed", "0", "-o", str(samples)]) == 0
    assert (
        column_names(samples) == column_names(data) == next(csv.reader([header.lstrip("\ufeff")]))
    )
    assert main(["score", str(run), str(samples), "-o", str(tmp_path / "s.csv")]) == 0
    plain.write_text(table.read_text().replace("a,b,c", header.lstrip("\ufeff"), 1))
    assert main(["score", str(run), str(plain), "-o", str(tmp_path / "p.csv")]) == 0


def test_numbers_as_column_names_do_not_become_a_header(table: Path, tmp_path: Path) -> None:
    """A Parquet table whose columns are named 2019, 2020, 2021: a CSV header of those names
    would read back as a row of data, so the output keeps x1, x2, x3, as before."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    x = np.loadtxt(table, delimiter=",", skiprows=1)
    data, run, samples = tmp_path / "t.parquet", tmp_path / "run", tmp_path / "s.csv"
    pq.write_table(pa.table({str(2019 + j): x[:, j] for j in range(3)}), data)
    _train_small(data, run)
    assert main(["sample", str(run), "-n", "5", "--seed", "0", "-o", str(samples)]) == 0
    assert read_csv(samples)[0] == ["x1", "x2", "x3"]
    assert main(["score", str(run), str(samples), "-o", str(tmp_path / "scores.csv")]) == 0
