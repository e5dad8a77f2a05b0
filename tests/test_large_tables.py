"""Tables read where they lie (realnvp.data.store, realnvp.training.rows): the computed
permutation, the row stores, training from a .npy file bit for bit as from memory (below and past
``LARGE`` rows), exact resume, eval/score/encode/decode chunk by chunk, ``realnvp convert``, and
peak memory that does not grow with the rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import fails, full_and_resumed
from realnvp.cli import main
from realnvp.config import TrainConfig
from realnvp.data.order import Permutation
from realnvp.data.store import ArrayRows, NpyRows, ParquetRows
from realnvp.data.tabular import DataError
from realnvp.training import rows as rows_module
from realnvp.training.checkpoint import load_model
from realnvp.training.loop import evaluate_nll
from realnvp.training.rows import RowSplit, StoredValidation, Table
from realnvp.training.runs import train_run

MODEL = {"num_layers": 2, "hidden_features": 16, "coupling": "affine"}
CONFIG = TrainConfig(steps=40, eval_every=10, batch_size=64, lr=3e-3)


def table(n: int = 3000, seed: int = 0) -> np.ndarray:
    """A curved 3-column table, float32-exact so that a float32 .npy file holds it as is."""
    x = np.random.default_rng(seed).normal(size=(n, 3))
    x[:, 1] += x[:, 0] ** 2
    return x.astype(np.float32).astype(np.float64)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the permutation -----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_permutation_is_a_bijection_with_its_inverse(n: int) -> None:
    perm = Permutation(n, seed=5)
    k = np.arange(n)
    image = perm(k)
    assert sorted(image.tolist()) == list(range(n))
    assert np.array_equal(perm.inverse(image), k)


def test_permutation_depends_on_the_seed_and_shuffles() -> None:
    n = 100_000
    a, b = Permutation(n, 0)(np.arange(n)), Permutation(n, 1)(np.arange(n))
    assert (a == b).mean() < 0.01
    # shuffled: position and image are uncorrelated, and the first tenth spreads over the range
    assert abs(np.corrcoef(np.arange(n), a)[0, 1]) < 0.02
    assert np.histogram(a[: n // 10], bins=10, range=(0, n))[0].min() > 800


def test_permutation_refuses_positions_out_of_range() -> None:
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        Permutation(5, 0)(np.array([5]))


# -- the stores ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "order"), [("float32", "C"), ("float64", "C"), ("int16", "C"), ("float64", "F")]
)
def test_npy_rows_read_take_and_chunks_give_the_array(
    tmp_path: Path, dtype: str, order: str
) -> None:
    x = np.asarray((table(500) * 10).astype(dtype), order=order)
    np.save(tmp_path / "x.npy", x)
    rows = NpyRows(tmp_path / "x.npy", usecols=[2, 0])
    expected = x[:, [2, 0]].astype(np.float64)
    index = np.array([499, 0, 17, 17, 250])
    assert rows.shape == (500, 2)
    assert np.array_equal(rows.read(10, 20), expected[10:20])
    assert np.array_equal(rows.take(index), expected[index])
    chunks = list(rows.chunks(128))
    assert [s for s, _ in chunks] == [0, 128, 256, 384]
    assert np.array_equal(np.concatenate([c for _, c in chunks]), expected)


def test_a_one_column_npy_file_is_a_table_of_one_column(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(10.0))
    rows = NpyRows(tmp_path / "x.npy")
    assert rows.shape == (10, 1)
    assert np.array_equal(rows.take(np.array([9, 2])), [[9.0], [2.0]])


def test_arrow_rows_read_across_row_groups(tmp_path: Path) -> None:
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    x = table(1000)
    t = pa.table({"a": x[:, 0], "b": x[:, 1].astype(np.float32), "c": (x[:, 2] > 0).astype(int)})
    pq.write_table(t, tmp_path / "x.parquet", row_group_size=300)
    rows = ParquetRows(tmp_path / "x.parquet", usecols=[1, 2])
    expected = np.c_[x[:, 1].astype(np.float32), x[:, 2] > 0].astype(np.float64)
    assert rows.shape == (1000, 2) and len(rows.starts) == 5  # 4 row groups
    assert np.array_equal(rows.read(250, 950), expected[250:950])  # spans 4 groups
    index = np.array([999, 0, 301, 599, 600])
    assert np.array_equal(rows.take(index), expected[index])
    assert np.array_equal(np.concatenate([c for _, c in rows.chunks()]), expected)
    assert [s for s, _ in rows.chunks(400)] == [0, 400, 800]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([{"a": 1}], dtype=object), "pickle"),
        (np.zeros((2, 2, 2)), "expected a 2-D table"),
        (np.array(["a", "b"]), "expected real numbers"),
    ],
)
def test_npy_rows_refuse_what_is_not_a_table(tmp_path: Path, array, message: str) -> None:
    np.save(tmp_path / "x.npy", array, allow_pickle=True)
    with pytest.raises(DataError, match=message):
        NpyRows(tmp_path / "x.npy")


# -- training from disk as from memory -------------------------------------------------------
@pytest.fixture(params=["small", "large"])
def regime(request, monkeypatch) -> str:
    """Train below ``LARGE`` rows (stored permutations) and past it (computed ones): a LARGE
    of 1,000 puts the 3,000-row tables past it."""
    if request.param == "large":
        monkeypatch.setattr(rows_module, "LARGE", 1000)
    return request.param


@pytest.mark.parametrize("conditional", [False, True])
def test_training_from_a_npy_file_is_training_from_memory(
    tmp_path: Path, regime: str, conditional: bool
) -> None:
    x = table()
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    context = (1,) if conditional else ()
    memory = Table(ArrayRows(x), context)
    disk = Table(NpyRows(tmp_path / "x.npy"), context)
    assert RowSplit(len(x), 300, 0).large == (regime == "large")
    flow_a, history_a = train_run(tmp_path / "a", memory, MODEL, CONFIG, device="cpu")
    flow_b, history_b = train_run(tmp_path / "b", disk, MODEL, CONFIG, device="cpu")
    assert history_a.val_nll == history_b.val_nll
    assert abs(history_a.train_nll[-1] - history_a.train_nll[0]) > 1e-3  # the weights moved
    assert same_weights(flow_a.state_dict(), flow_b.state_dict())


def test_a_table_in_memory_trains_as_the_array_always_did(tmp_path: Path) -> None:
    """Below LARGE rows, ``Table.of(x)`` takes the array path's split, batches and validation
    rows (another split moves the validation NLL by ~1e-2). Not bit for bit: the statistics are
    summed in file order, not in the split's, which moves them by a few ulps."""
    x = table()
    flow_a, history_a = train_run(tmp_path / "a", x, MODEL, CONFIG, device="cpu")
    flow_b, history_b = train_run(tmp_path / "b", Table.of(x), MODEL, CONFIG, device="cpu")
    assert history_b.val_nll == pytest.approx(history_a.val_nll, rel=1e-9)
    b = flow_b.state_dict()
    assert all(torch.allclose(v, b[k], rtol=0, atol=1e-6) for k, v in flow_a.state_dict().items())


def test_a_stored_run_resumes_exactly(tmp_path: Path, regime: str) -> None:
    x = table()
    np.save(tmp_path / "x.npy", x)
    disk = Table(NpyRows(tmp_path / "x.npy"))
    full, resumed = full_and_resumed(tmp_path, disk, MODEL, CONFIG, at=20)
    assert same_weights(full, resumed)


def test_computed_split_and_batches(monkeypatch) -> None:
    monkeypatch.setattr(rows_module, "LARGE", 10)
    monkeypatch.setattr(rows_module, "BLOCK_STEPS", 4)  # blocks of 4 batches: resume mid-block
    split = RowSplit(1000, 100, seed=3)
    train, val = split.train(np.arange(900)), split.val(np.arange(100))
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(1000))
    batches = split.batches(64, seed=3)  # the rows of each batch: training rows
    epoch = np.concatenate([next(batches).numpy() for _ in range(900 // 64)])
    assert len(set(epoch.tolist())) == len(epoch) == 64 * (900 // 64)  # no row twice
    assert set(epoch.tolist()) <= set(train.tolist())
    later = split.batches(64, seed=3, start_step=20)  # resumed at step 20: the same batches
    again = split.batches(64, seed=3)
    for _ in range(20):
        next(again)
    assert all(torch.equal(next(later), next(again)) for _ in range(30))


def test_streamed_validation_is_the_mean_nll_of_the_validation_rows(monkeypatch) -> None:
    monkeypatch.setattr(rows_module, "LARGE", 10)
    x = table(2000)
    from realnvp import RealNVP

    flow = RealNVP.for_data(x, num_layers=2, hidden_features=8).double()
    split = RowSplit(2000, 700, seed=0)
    scored = StoredValidation(Table.of(x), split, seed=0, chunk=256).mean_nll(flow)
    direct = evaluate_nll(flow, torch.as_tensor(x[split.val(np.arange(700))])).mean().item()
    assert scored == pytest.approx(direct, rel=1e-12)


# -- the command line ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("large")
    x = table(2000)
    header = "a,b,c"
    np.savetxt(d / "x.csv", x, delimiter=",", header=header, comments="", fmt="%.9g")
    np.save(d / "x.npy", np.loadtxt(d / "x.csv", delimiter=",", skiprows=1))
    args = ["--steps", "30", "--eval-every", "10", "--layers", "2", "--hidden", "16"]
    for name in ("csv", "npy"):
        assert (
            main(["train", str(d / f"x.{name}"), "--out", str(d / name), *args, "--no-progress"])
            == 0
        )
    return d


def test_cli_trains_the_same_weights_from_csv_and_npy(files: Path) -> None:
    a, b = load_model(files / "csv")[0], load_model(files / "npy")[0]
    assert same_weights(a.state_dict(), b.state_dict())


@pytest.mark.parametrize("command", ["score", "encode"])
def test_cli_scores_a_npy_file_chunk_by_chunk_as_the_csv(
    files: Path, tmp_path: Path, command: str, monkeypatch
) -> None:
    from realnvp.cli import tables

    monkeypatch.setattr(tables, "chunk_rows", lambda width: 300)  # 7 chunks
    for name in ("csv", "npy"):
        out = tmp_path / f"{name}.csv"
        assert main([command, str(files / "csv"), str(files / f"x.{name}"), "-o", str(out)]) == 0
    a, b = (tmp_path / "csv.csv").read_text(), (tmp_path / "npy.csv").read_text()
    assert a.splitlines()[0] == b.splitlines()[0]  # the header
    # float32 products of a 300-row chunk and of the 2,000-row table round differently
    assert np.allclose(
        *(np.loadtxt(t.splitlines()[1:], delimiter=",") for t in (a, b)), rtol=1e-6, atol=1e-6
    )


def test_cli_eval_of_a_npy_file_is_eval_of_the_csv(files: Path, capsys, monkeypatch) -> None:
    from realnvp.cli import tables

    monkeypatch.setattr(tables, "chunk_rows", lambda width: 300)
    results = []
    for name in ("csv", "npy"):
        assert main(["eval", str(files / "csv"), str(files / f"x.{name}"), "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[1]["n"] == results[0]["n"] == 2000
    # float32 products of a 300-row chunk and of the 2,000-row table round differently (~1e-7)
    assert results[1]["nll"] == pytest.approx(results[0]["nll"], rel=1e-7)
    assert results[1]["nll_se"] == pytest.approx(results[0]["nll_se"], rel=1e-6)


def test_cli_decodes_a_npy_file_of_codes(files: Path, tmp_path: Path) -> None:
    z = tmp_path / "z.csv"
    assert main(["encode", str(files / "csv"), str(files / "x.csv"), "-o", str(z)]) == 0
    assert main(["convert", str(z), str(tmp_path / "z.npy")]) == 0
    assert (
        main(["decode", str(files / "csv"), str(tmp_path / "z.npy"), "-o", str(tmp_path / "x.csv")])
        == 0
    )
    back = np.loadtxt(tmp_path / "x.csv", delimiter=",", skiprows=1)
    assert np.allclose(back, np.loadtxt(files / "x.csv", delimiter=",", skiprows=1), atol=1e-6)


def test_a_bad_row_in_a_npy_file_is_named_and_nothing_is_written(
    files: Path, tmp_path: Path, capsys
) -> None:
    x = np.load(files / "x.npy")
    x[1500, 2] = np.nan
    np.save(tmp_path / "bad.npy", x)
    out = tmp_path / "scores.csv"
    out.write_text("keep me\n")
    line = fails(["score", str(files / "csv"), str(tmp_path / "bad.npy"), "-o", str(out)], capsys)
    assert "row 1501, column 3 is nan" in line
    assert out.read_text() == "keep me\n"
    line = fails(["train", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "r")], capsys)
    assert "row 1501, column 3 is nan" in line and "realnvp convert" in line


# -- realnvp convert -------------------------------------------------------------------------------
def test_convert_a_csv_to_npy(files: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "y.npy"
    assert main(["convert", str(files / "x.csv"), str(out), "--columns", "c,a"]) == 0
    assert "2,000 rows x 2 columns (c, a), float64" in capsys.readouterr().err
    x = np.loadtxt(files / "x.csv", delimiter=",", skiprows=1)
    assert np.array_equal(np.load(out), x[:, [2, 0]])


def test_convert_drops_nonfinite_rows_and_writes_float32(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = table(100)
    x[[3, 50], 1] = [np.inf, np.nan]
    pq.write_table(
        pa.table({"a": x[:, 0], "b": x[:, 1]}), tmp_path / "x.parquet", row_group_size=30
    )
    out = tmp_path / "x.npy"
    assert (
        main(
            [
                "convert",
                str(tmp_path / "x.parquet"),
                str(out),
                "--drop-nonfinite",
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    y = np.load(out)
    assert y.dtype == np.float32 and y.shape == (98, 2)
    assert np.array_equal(y, np.delete(x[:, :2], [3, 50], axis=0).astype(np.float32))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n3,x\n", "row 3, column 2: 'x' is not a number"),
        ("a,b\n1,2\n3\n", "row 3 has 1 columns, expected 2"),
        ("a,b\n1,2\n3,nan\n", "row 3, column 2 is nan; pass --drop-nonfinite"),
        ("a,b\n1,2\n3,1e300\n", "overflows float32"),
    ],
)
def test_convert_refuses_a_bad_file_and_keeps_the_old_output(
    tmp_path: Path, capsys, content: str, message: str
) -> None:
    (tmp_path / "x.csv").write_text(content)
    out = tmp_path / "x.npy"
    np.save(out, np.ones((2, 2)))
    line = fails(["convert", str(tmp_path / "x.csv"), str(out), "--dtype", "float32"], capsys)
    assert message in line
    assert np.array_equal(np.load(out), np.ones((2, 2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv", "x.npy"]


# -- memory ---------------------------------------------------------------------------------------
PEAK = """
import resource, sys
from realnvp.cli import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
sys.exit(code)
"""


def peak_kib(data: Path, out: Path) -> int:
    args = ["train", str(data), "--out", str(out), "--steps", "20", "--eval-every", "20"]
    args += ["--layers", "2", "--hidden", "16", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB and MADV_DONTNEED: Linux")
def test_peak_memory_does_not_grow_with_the_rows_of_a_npy_file(tmp_path: Path) -> None:
    """A 3,000,000-row table (72 MB of float32, past LARGE) trains in about the memory of a
    20,000-row one: what the process holds does not grow with the file."""
    rng = np.random.default_rng(0)
    big = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float32, (3_000_000, 6))
    for start in range(0, len(big), 500_000):
        big[start : start + 500_000] = rng.normal(size=(500_000, 6))
    big.flush()
    del big
    np.save(tmp_path / "small.npy", rng.normal(size=(20_000, 6)).astype(np.float32))
    small, large = (
        peak_kib(tmp_path / "small.npy", tmp_path / "s"),
        peak_kib(tmp_path / "big.npy", tmp_path / "b"),
    )
    assert large - small < 150 * 1024, (small, large)
    data = json.loads((tmp_path / "b" / "model.json").read_text())["data"]
    assert data["rows"] == 3_000_000
    assert data["val_fraction"] * 3_000_000 == pytest.approx(100_000)  # the default's cap


def test_streamed_validation_splits_its_chunks_over_processes(monkeypatch) -> None:
    """Under torchrun each process scores every N-th chunk; the all-reduced sums are those of
    all the validation rows."""
    monkeypatch.setattr(rows_module, "LARGE", 10)
    x = table(2000)
    from realnvp import RealNVP
    from realnvp.training import distributed

    flow = RealNVP.for_data(x, num_layers=2, hidden_features=8).double()
    split = RowSplit(2000, 700, seed=0)
    validation = StoredValidation(Table.of(x), split, seed=0, chunk=256)
    sums = []
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda t: sums.append(t.clone()) or t)
    for r in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        validation.mean_nll(flow)
    total = sums[0] + sums[1]
    assert [s[1].item() for s in sums] == [256 + 188, 256]  # chunks 0 and 2, chunk 1
    direct = evaluate_nll(flow, torch.as_tensor(x[split.val(np.arange(700))])).mean().item()
    assert (total[0] / total[1]).item() == pytest.approx(direct, rel=1e-12)


def test_a_large_parquet_file_is_refused_for_training_with_the_conversion_named(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    from realnvp.cli import tables

    x = table(500)
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1]}), tmp_path / "x.parquet")
    monkeypatch.setattr(tables, "LOAD_VALUES", 999)  # 1,000 values: past it
    line = fails(["train", str(tmp_path / "x.parquet"), "--out", str(tmp_path / "r")], capsys)
    assert "500 rows; training reads random rows" in line
    assert f"realnvp convert {tmp_path / 'x.parquet'} x.npy" in line
    assert not (tmp_path / "r").exists()


def test_a_big_csv_gets_a_hint_to_convert_it(tmp_path: Path, capsys, monkeypatch) -> None:
    from realnvp.cli import tables

    np.savetxt(tmp_path / "x.csv", table(300), delimiter=",")
    monkeypatch.setattr(tables, "BIG_CSV", 1000)
    args = ["--steps", "2", "--layers", "2", "--hidden", "4", "--no-progress"]
    assert main(["train", str(tmp_path / "x.csv"), "--out", str(tmp_path / "r"), *args]) == 0
    assert "a CSV file is read into memory" in capsys.readouterr().err


def test_a_run_keeps_its_split_whichever_path_resumes_it(tmp_path: Path, monkeypatch) -> None:
    """A run started from an array (numpy's split and torch's order, whatever its size, as
    before tables were read in place) resumes from a Table with that split; one started from a
    Table past LARGE (a computed split, recorded) resumes from an array with the computed one."""
    from helpers import StopAt

    monkeypatch.setattr(rows_module, "LARGE", 1000)
    x = table()
    np.save(tmp_path / "x.npy", x)
    disk = Table(NpyRows(tmp_path / "x.npy"))
    for first, then, name in [(x, disk, "array"), (disk, x, "table")]:
        full, _ = train_run(tmp_path / f"{name}-full", first, MODEL, CONFIG, device="cpu")
        with pytest.raises(StopAt.Stop):
            train_run(tmp_path / name, first, MODEL, CONFIG, device="cpu", callbacks=[StopAt(20)])
        resumed, _ = train_run(tmp_path / name, then, MODEL, CONFIG, resume=True, device="cpu")
        assert same_weights(full.state_dict(), resumed.state_dict()), name
    recorded = json.loads((tmp_path / "table" / "model.json").read_text())["data"]
    assert recorded["split"] == "computed"
    assert "split" not in json.loads((tmp_path / "array" / "model.json").read_text())["data"]


def test_convert_names_the_files_column_under_columns(tmp_path: Path, capsys) -> None:
    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n4,5,nan\n")
    line = fails(
        ["convert", str(tmp_path / "x.csv"), str(tmp_path / "x.npy"), "--columns", "a,c"], capsys
    )
    assert "row 3, column 3 is nan" in line


def test_streamed_score_skips_dropped_rows_and_refuses_an_empty_result(
    files: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    from realnvp.cli import tables

    monkeypatch.setattr(tables, "chunk_rows", lambda width: 10)
    x = np.load(files / "x.npy")[:30].copy()
    x[:12, 0] = np.nan  # the first chunk and two rows of the second: dropped
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "s.csv"
    args = ["score", str(files / "csv"), str(tmp_path / "x.npy"), "-o", str(out)]
    assert main([*args, "--drop-nonfinite"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "log_prob" and lines.count("log_prob") == 1 and len(lines) == 1 + 18
    x[:, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    out.unlink()
    assert "has no usable rows" in fails([*args, "--drop-nonfinite"], capsys)
    assert not out.exists()


def test_a_table_run_refuses_separate_contexts_and_a_parquet_table(tmp_path: Path) -> None:
    """A Table names its context columns itself; and training gathers random rows, which a
    Parquet file gives only by decoding whole row groups."""
    x = table(100)
    with pytest.raises(TypeError, match="holds its contexts"):
        train_run(tmp_path / "a", Table.of(x), MODEL, CONFIG, context=np.ones((100, 1)))
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1]}), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="realnvp convert"):
        train_run(tmp_path / "b", Table(ParquetRows(tmp_path / "x.parquet")), MODEL, CONFIG)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
