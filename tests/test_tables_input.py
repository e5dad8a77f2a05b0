"""Tables as users have them: Parquet and Feather files, text columns, ``--columns`` to choose
the numeric ones, and training data that have no density (a constant or a collinear column)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import fails
from realnvp.cli import main
from realnvp.data import DataError, check_density_table, load_table
from realnvp.data.tabular import column_names
from realnvp.estimator import RealNVPDensity
from realnvp.training.checkpoint import load_model

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
feather = pytest.importorskip("pyarrow.feather")

SMALL = ["--steps", "20", "--eval-every", "10", "--layers", "2", "--hidden", "8", "--no-progress"]
NUMERIC = ["carat", "depth", "price"]
TEXT = "cut, color, clarity"
ROWS = 300


def diamonds(n: int = ROWS, seed: int = 0) -> dict[str, np.ndarray]:
    """A small diamonds-like table: three numeric columns between three text ones."""
    rng = np.random.default_rng(seed)
    carat = rng.gamma(4.0, 0.2, n)
    return {
        "carat": carat,
        "cut": rng.choice(["Ideal", "Good", "Fair"], n),
        "depth": rng.normal(61.5, 1.4, n),
        "color": rng.choice(["E", "F", "G"], n),
        "price": np.exp(7 + 1.5 * np.log(carat) + 0.2 * rng.normal(size=n)),
        "clarity": rng.choice(["SI1", "VS2"], n),
    }


def write_csv(path: Path, table: dict[str, np.ndarray], header: bool = True) -> Path:
    columns = list(table.values())
    lines = [",".join(table)] if header else []
    lines += [",".join(repr(float(c[i])) if c.dtype.kind == "f" else str(c[i]) for c in columns)
              for i in range(len(columns[0]))]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def write_arrow(path: Path, table: dict[str, np.ndarray]) -> Path:
    """A Parquet (.parquet, .pq) or Feather/Arrow IPC (.feather, .arrow, .ipc) file; the color
    column is a categorical (dictionary) one, as pandas writes it."""
    arrays = {k: pa.array(v.tolist()) for k, v in table.items()}
    if "color" in arrays:
        arrays["color"] = arrays["color"].dictionary_encode()
    data = pa.table(arrays)
    if path.suffix in (".parquet", ".pq"):
        pq.write_table(data, path)
    else:
        feather.write_feather(data, path)
    return path


def numbers(table: dict[str, np.ndarray], names: list[str] = NUMERIC) -> np.ndarray:
    return np.column_stack([table[k] for k in names])


def read_scores(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    assert lines[0] == "log_prob"
    return np.array([float(v) for v in lines[1:]])


def scores(run: Path, data: Path, out: Path) -> np.ndarray:
    assert main(["score", str(run), str(data), "-o", str(out)]) == 0
    return read_scores(out)


@pytest.fixture(scope="module")
def chosen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A run trained on the numeric columns of a CSV file that also holds text columns."""
    folder = tmp_path_factory.mktemp("chosen")
    table = diamonds()
    data = write_csv(folder / "diamonds.csv", table)
    run = folder / "run"
    assert (
        main(["train", str(data), "--columns", "carat,depth,price", "--out", str(run), *SMALL]) == 0
    )
    return run, data, table


# -- Parquet and Feather ---------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".feather"])
def test_parquet_and_feather_train_and_score(suffix: str, tmp_path: Path) -> None:
    table = {k: diamonds()[k] for k in NUMERIC}
    data = write_arrow(tmp_path / f"d{suffix}", table)
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), *SMALL]) == 0
    flow, _ = load_model(run)
    with torch.no_grad():
        expected = flow.log_prob(flow.as_input(numbers(table))).double().numpy()
    assert np.allclose(scores(run, data, tmp_path / "s.csv"), expected, rtol=1e-6)


@pytest.mark.parametrize("suffix", [".parquet", ".pq", ".feather", ".arrow", ".ipc"])
def test_arrow_files_read_as_numbers_with_their_names(suffix: str, tmp_path: Path) -> None:
    table = {k: diamonds()[k] for k in NUMERIC}
    path = write_arrow(tmp_path / f"d{suffix}", table)
    assert column_names(path) == NUMERIC
    assert np.array_equal(load_table(path), numbers(table))
    assert np.array_equal(load_table(path, usecols=[2, 0]), numbers(table, ["price", "carat"]))


def test_an_arrow_stream_and_nulls_read(tmp_path: Path) -> None:
    data = pa.table({"a": pa.array([1, None, 3]), "b": pa.array([0.5, 1.5, 2.5])})
    path = tmp_path / "s.arrow"
    with pa.ipc.new_stream(path, data.schema) as stream:
        stream.write_table(data)
    with pytest.raises(DataError, match="row 2, column 1 is nan; pass --drop-nonfinite"):
        load_table(path)
    assert load_table(path, drop_nonfinite=True).tolist() == [[1, 0.5], [3, 2.5]]


def test_a_damaged_parquet_file_gets_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    line = fails(["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys)
    assert "bad.parquet: not a readable Parquet file" in line


def test_without_pyarrow_one_line_says_what_to_install(monkeypatch, tmp_path: Path, capsys):
    path = write_arrow(tmp_path / "d.parquet", {k: diamonds()[k] for k in NUMERIC})
    for name in ["pyarrow", "pyarrow.compute", "pyarrow.feather", "pyarrow.parquet"]:
        monkeypatch.setitem(sys.modules, name, None)  # import pyarrow now raises ImportError
    line = fails(["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys)
    assert line == (
        f"realnvp train: error: {path}: reading Parquet files needs pyarrow: pip install "
        'pyarrow (or pip install "realnvp[tables]")'
    )


# -- text columns ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "suffix, what, row",
    [(".csv", "text", 2), (".parquet", "text", 1), (".feather", "text", 1)],
)
def test_text_columns_are_refused_all_in_one_line(suffix, what, row, tmp_path, capsys) -> None:
    table = diamonds()
    write = write_csv if suffix == ".csv" else write_arrow
    path = write(tmp_path / f"d{suffix}", table)
    line = fails(["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys)
    first = str(table["cut"][0])
    assert line == (
        f"realnvp train: error: {path}: columns {TEXT} hold {what} (e.g. {first!r} in row "
        f"{row}), not numbers; choose the numeric ones with --columns"
    )
    assert not (tmp_path / "r" / "model.json").exists()


def test_booleans_are_refused_as_not_numbers(tmp_path: Path, capsys) -> None:
    path = write_arrow(tmp_path / "b.parquet", {"a": np.arange(9.0), "ok": np.arange(9) % 2 == 0})
    line = fails(["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys)
    assert "column ok holds true/false values (e.g. True in row 1), not numbers" in line


def test_a_headerless_text_column_is_named_by_number(tmp_path: Path, capsys) -> None:
    path = write_csv(tmp_path / "d.csv", diamonds(), header=False)
    line = fails(["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys)
    assert f"columns 2, 4, 6 hold text (e.g. {str(diamonds()['cut'][0])!r} in row 1)" in line


def test_a_stray_non_number_is_still_named_by_row_and_column(tmp_path: Path, capsys) -> None:
    rows = "\n".join(f"{i},{i % 7}" for i in range(10))
    path = tmp_path / "typo.csv"
    path.write_text(f"a,b\n{rows}\n1.2.3,4\n")
    line = fails(["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys)
    assert line.endswith("typo.csv: row 12, column 1: '1.2.3' is not a number")


# -- --columns -------------------------------------------------------------------------------
def test_columns_leave_the_text_columns_out(chosen) -> None:
    run = chosen[0]
    flow, config = load_model(run)
    assert flow.event_shape == (3,) and flow.context_shape is None
    assert config["data"]["columns"] == {"names": NUMERIC, "positions": [0, 2, 4], "width": 6}
    assert "context_columns" not in config["data"]


def test_columns_by_number_are_the_same_run(chosen, tmp_path: Path) -> None:
    run, data, _ = chosen
    again = tmp_path / "again"
    assert main(["train", str(data), "--columns", "5,1,3", "--out", str(again), *SMALL]) == 0
    first, second = (json.loads((r / "model.json").read_text())["data"] for r in (run, again))
    assert first == second


def test_score_picks_the_columns_by_name(chosen, tmp_path: Path) -> None:
    run, data, table = chosen
    flow, _ = load_model(run)
    with torch.no_grad():
        expected = flow.log_prob(flow.as_input(numbers(table))).double().numpy()
    assert np.allclose(scores(run, data, tmp_path / "a.csv"), expected, rtol=1e-6)
    shuffled = {k: table[k] for k in ["price", "clarity", "depth", "carat"]}
    other = write_arrow(tmp_path / "other.parquet", shuffled)
    assert np.allclose(scores(run, other, tmp_path / "b.csv"), expected, rtol=1e-6)


def test_eval_encode_decode_sample_and_audit_read_the_chosen_columns(chosen, tmp_path, capsys):
    run, data, table = chosen
    assert main(["eval", str(run), str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == ROWS
    assert main(["audit", str(run), str(data)]) == 0
    z, x = tmp_path / "z.csv", tmp_path / "x.csv"
    assert main(["encode", str(run), str(data), "-o", str(z)]) == 0
    assert z.read_text().splitlines()[0] == "z1,z2,z3"
    assert main(["decode", str(run), str(z), "-o", str(x)]) == 0
    lines = x.read_text().splitlines()
    assert lines[0] == "carat,depth,price"
    decoded = np.loadtxt(lines[1:], delimiter=",", ndmin=2)
    assert np.allclose(decoded, numbers(table), rtol=1e-4)
    assert main(["sample", str(run), "-n", "3", "-o", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == "carat,depth,price"


def test_a_file_missing_a_chosen_column_gets_one_line(chosen, tmp_path: Path, capsys) -> None:
    run, _, table = chosen
    path = write_csv(tmp_path / "less.csv", {k: table[k] for k in ["price", "carat", "cut"]})
    line = fails(["score", str(run), str(path), "-o", "-"], capsys)
    assert line == (
        f"realnvp score: error: {path}: has no column depth; the model reads carat, depth, "
        "price (its columns are price, carat, cut)"
    )


def test_a_headerless_file_is_read_by_position(tmp_path: Path) -> None:
    table = diamonds()
    data = write_csv(tmp_path / "d.csv", {k: table[k] for k in ["carat", "depth", "price"]}, False)
    run = tmp_path / "run"
    assert main(["train", str(data), "--columns", "1,3", "--out", str(run), *SMALL]) == 0
    flow, config = load_model(run)
    assert config["data"]["columns"] == {"names": None, "positions": [0, 2], "width": 3}
    with torch.no_grad():
        expected = flow.log_prob(flow.as_input(numbers(table, ["carat", "price"]))).numpy()
    assert np.allclose(scores(run, data, tmp_path / "s.csv"), expected, rtol=1e-6)


def test_columns_combine_with_a_context(chosen, tmp_path: Path, capsys) -> None:
    _, _, table = chosen
    data = write_arrow(tmp_path / "d.parquet", table)
    run = tmp_path / "run"
    args = ["--columns", "depth,price", "--context", "carat", "--out", str(run), *SMALL]
    assert main(["train", str(data), *args]) == 0
    flow, config = load_model(run)
    assert flow.event_shape == (2,) and flow.context_shape == (1,)
    assert config["data"]["context_columns"] == {"width": 3, "context": [0], "names": NUMERIC}
    z = tmp_path / "z.csv"
    assert main(["encode", str(run), str(data), "-o", str(z)]) == 0
    assert z.read_text().splitlines()[0] == "carat,z1,z2"
    shuffled = write_csv(
        tmp_path / "other.csv", {k: table[k] for k in ["price", "cut", "depth", "carat"]}
    )
    x, c = flow.as_input(numbers(table, ["depth", "price"])), table["carat"][:, None]
    with torch.no_grad():
        expected = flow.log_prob(x, c).double().numpy()
    assert np.allclose(scores(run, shuffled, tmp_path / "s.csv"), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "data, args, message",
    [
        ("moons", ["--columns", "1,2"], "moons: a built-in data set has no columns to choose"),
        ("table", ["--columns", "price"], "--columns chooses 1 column; Real NVP needs at least 2"),
        ("table", ["--columns", "carat,size"], "no column 'size' (its columns are carat, cut,"),
    ],
)
def test_bad_columns_get_one_line(chosen, tmp_path, capsys, data, args, message) -> None:
    spec = str(chosen[1]) if data == "table" else data
    assert message in fails(["train", spec, *args, "--out", str(tmp_path / "r"), *SMALL], capsys)


# -- tables without a density ----------------------------------------------------------------
def test_a_constant_column_is_refused(tmp_path: Path, capsys) -> None:
    table = diamonds()
    table["depth"] = np.full(ROWS, 61.5)
    path = write_csv(tmp_path / "data.csv", table)
    args = ["--columns", "carat,depth,price", "--out", str(tmp_path / "r"), *SMALL]
    assert fails(["train", str(path), *args], capsys) == (
        f"realnvp train: error: {path}: column 3 ('depth') is constant (every row is 61.5): a "
        "density needs each column to vary; leave it out with --columns"
    )


def test_collinear_columns_are_refused(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=ROWS)
    table = {"x": x, "w": rng.normal(size=ROWS), "y": 2.5 * x - 1}
    path = write_arrow(tmp_path / "data.parquet", table)
    assert fails(["train", str(path), "--out", str(tmp_path / "r"), *SMALL], capsys) == (
        f"realnvp train: error: {path}: columns 1 ('x') and 3 ('y') are perfectly collinear "
        "(|correlation| = 1.000000): the density is concentrated on a line; leave one out with "
        "--columns"
    )
    run = tmp_path / "ok"
    assert main(["train", str(path), "--columns", "x,w", "--out", str(run), *SMALL]) == 0


@pytest.mark.parametrize(
    "x, message",
    [
        (np.c_[np.arange(9.0), np.ones(9)], "X: column 2 is constant (every row is 1): "),
        (np.c_[np.arange(9.0), -np.arange(9.0)], "X: columns 1 and 2 are perfectly collinear"),
    ],
)
def test_the_estimator_refuses_them_too(x: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RealNVPDensity(steps=2).fit(x)


def test_three_dependent_columns_are_named_together() -> None:
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 50))
    with pytest.raises(DataError, match=r"columns 1, 2 and 4 are linearly dependent"):
        check_density_table(np.c_[a, b, c, a - 3 * b], "t")


def test_nearly_collinear_columns_have_a_density() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    check_density_table(np.c_[x, x + 1e-6 * rng.normal(size=1000)], "t")
