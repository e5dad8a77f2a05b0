"""The command line: help, the study end to end on small data, and bad arguments."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from realnvp.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "realnvp", *args], capture_output=True, text=True, timeout=600
    )


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "study" in result.stdout


def test_study_help_has_an_example() -> None:
    result = run("study", "--help")
    assert result.returncode == 0 and "realnvp study moons --out" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--depths", "0", "2"], "--depths: must be at least 1"),
        (["--steps", "-5"], "--steps: must be at least 1"),
        (["--noise", "0"], "--noise: must be a positive number"),
    ],
)
def test_study_refuses_nonsense_arguments(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["study", "moons", "--out", str(tmp_path / "out"), "--quick", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_study_refuses_an_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("precious")
    code = main(["study", "moons", "--out", str(blocker / "sub"), "--quick"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write" in err
    assert blocker.read_text() == "precious"


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study")
    result = run("study", "moons", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_quick_study_writes_every_output(quick_study: Path) -> None:
    for name in ("fig1_mapping.png", "fig2_density.png", "fig3_loss.png", "fig4_latent.png"):
        data = (quick_study / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    assert (quick_study / "results.md").read_text().count("\n|") >= 4


@pytest.mark.slow
def test_quick_study_table_is_consistent(quick_study: Path) -> None:
    with open(quick_study / "results.csv") as f:
        rows = list(csv.DictReader(f))
    config = json.loads((quick_study / "config.json").read_text())
    assert [int(r["layers"]) for r in rows] == list(config["depths"])
    for r in rows:
        gap = float(r["test_nll"]) - float(r["limit_nll"])
        assert float(r["gap"]) == pytest.approx(gap, abs=1e-9)
        assert float(r["gap_se"]) > 0 and float(r["test_nll_se"]) > 0
        assert float(r["max_inverse_error"]) < 1e-4
        # No model beats the true density by more than sampling noise.
        assert float(r["gap"]) > -3 * float(r["gap_se"])
    # More layers fit better, even in the quick run.
    assert float(rows[-1]["test_nll"]) < float(rows[0]["test_nll"])


@pytest.mark.slow
def test_config_json_reruns_the_study(quick_study: Path) -> None:
    from realnvp.studies.moons import MoonsStudyConfig

    config = json.loads((quick_study / "config.json").read_text())
    config.pop("study"), config.pop("environment")
    assert MoonsStudyConfig.from_dict(config) == MoonsStudyConfig.quick()
