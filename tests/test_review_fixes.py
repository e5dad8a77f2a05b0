"""Regression tests for the bugs a review of the library found (issue 11): each one failed on the
code before its fix."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from helpers import fails, randomize
from realnvp import RealNVP, RealNVPDensity
from realnvp.bijections import AffineCoupling
from realnvp.cli import main
from realnvp.cli.commands import COMMANDS
from realnvp.data.images import read_cifar_batch
from realnvp.data.tabular import DataError
from realnvp.files import atomic_write
from realnvp.models import MultiScaleRealNVP, dequantize
from realnvp.nn import MLP
from realnvp.plots import save_figure
from realnvp.training import evaluate_nll
from realnvp.training.checkpoint import (
    FORMAT,
    CheckpointError,
    load_training_state,
    save_model,
)


# -- 3. generation and inference are exact and side-effect free in any mode -----------------
def image_flow() -> MultiScaleRealNVP:
    torch.manual_seed(0)
    flow = MultiScaleRealNVP((1, 4, 4), levels=17, num_scales=2, hidden_channels=4, num_blocks=1)
    return randomize(flow.double(), std=0.2).train()


def test_decode_inverts_encode_on_a_model_in_training_mode() -> None:
    flow = image_flow()
    x = dequantize(torch.randint(0, 17, (8, 1, 4, 4))).double()
    assert (flow.decode(flow.encode(x)) - x).abs().max() < 1e-10
    assert flow.training and all(m.training for m in flow.modules())


def test_sampling_changes_no_state_and_no_mode() -> None:
    flow = image_flow()
    flow.transform[1].layers[0].eval()  # a submodule in its own mode keeps it
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    flow.sample(6, generator=torch.Generator().manual_seed(0))
    flow.sample_and_log_prob(6, generator=torch.Generator().manual_seed(0))
    flow.encode(flow.decode(torch.randn(6, 1, 4, 4, dtype=torch.float64)))
    after = flow.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flow.training and not flow.transform[1].layers[0].training


def test_a_sample_does_not_depend_on_the_rest_of_its_batch() -> None:
    flow = image_flow()
    z = torch.randn(16, 1, 4, 4, dtype=torch.float64)
    assert (flow.decode(z)[:2] - flow.decode(z[:2])).abs().max() < 1e-12
    x, log_p = flow.sample_and_log_prob(4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(log_p, evaluate_nll(flow, x).neg(), atol=1e-8)


def test_log_prob_in_training_mode_still_uses_the_batch() -> None:
    """The paper trains with batch statistics: the running averages follow the batch."""
    flow = image_flow()
    before = flow.transform[1].layers[1].running_mean.clone()
    flow.log_prob(dequantize(torch.randint(0, 17, (8, 1, 4, 4))).double())
    assert not torch.equal(before, flow.transform[1].layers[1].running_mean)


# -- 5. checkpoints, errors, files ----------------------------------------------------------
def write_checkpoint(path: Path, tensors: dict, meta: dict) -> None:
    import json

    save_file(
        tensors,
        str(path),
        metadata={"format": FORMAT, **{k: json.dumps(v) for k, v in meta.items()}},
    )


@pytest.mark.parametrize("missing", ["state", "param_groups", "model"])
def test_a_training_state_with_missing_keys_is_refused_in_one_line(
    tmp_path: Path, capsys, missing: str
) -> None:
    flow = RealNVP(2, num_layers=1, hidden_features=4)
    tensors = {f"model.{k}": v.contiguous() for k, v in flow.state_dict().items()}
    meta = {"model": flow.config, "param_groups": [], "state": {"step": 1}}
    del meta[missing]
    write_checkpoint(tmp_path / "last.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="damaged checkpoint"):
        load_training_state(tmp_path)
    line = fails(["train", "moons", "--out", str(tmp_path), "--resume"], capsys)
    assert "damaged checkpoint" in line


def test_a_training_state_without_its_step_is_refused(tmp_path: Path) -> None:
    flow = RealNVP(2, num_layers=1, hidden_features=4)
    tensors = {f"model.{k}": v.contiguous() for k, v in flow.state_dict().items()}
    write_checkpoint(
        tmp_path / "last.safetensors",
        tensors,
        {"model": flow.config, "param_groups": [], "state": {"history": {}}},
    )
    with pytest.raises(CheckpointError, match="lacks step"):
        load_training_state(tmp_path)


def test_an_internal_value_error_is_not_passed_off_as_a_user_error(monkeypatch) -> None:
    """A bug keeps its traceback: only the library's own user errors become one line."""

    def bug(args):
        raise ValueError("an internal bug")

    monkeypatch.setitem(COMMANDS, "eval", bug)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["eval", "runs/none", "moons"])


def test_atomic_write_flushes_the_file_and_the_folder(tmp_path: Path, monkeypatch) -> None:
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "f.txt"
    atomic_write(target, lambda tmp: tmp.write_text("hello"))
    assert target.read_text() == "hello"
    kinds = [(kind, Path(p).name if kind == "fsync" else p) for kind, p in events]
    assert kinds[0][0] == "fsync" and kinds[0][1].endswith(".tmp")  # the data, before the rename
    assert kinds[1] == ("replace", str(target))
    assert kinds[2] == ("fsync", tmp_path.name)  # the folder, after the rename


def test_importing_the_library_leaves_the_umask_alone(tmp_path: Path) -> None:
    """The import used to set the process's umask to 0 for a moment; a written file gets the
    permissions the umask gives."""
    code = (
        "import os\n"
        "os.umask(0o027)\n"
        "def refuse(mask): raise AssertionError('umask changed')\n"
        "os.umask = refuse\n"
        "import realnvp.cli, realnvp.training.checkpoint\n"
        "from realnvp.files import atomic_write\n"
        "from pathlib import Path\n"
        f"atomic_write(Path({str(tmp_path / 'f')!r}), lambda t: t.write_text('x'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640


def test_a_figure_that_fails_to_save_leaves_the_old_file(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.figure

    path = tmp_path / "samples.png"
    path.write_bytes(b"the good old figure")

    def broken(self, target, **kwargs):
        Path(target).write_bytes(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_figure(matplotlib.figure.Figure(), path)
    assert path.read_bytes() == b"the good old figure"
    assert [p.name for p in tmp_path.iterdir()] == ["samples.png"]


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.full((2, 3072), 300, np.int16), r"pixel \(0, 0\) is 300"),
        (np.full((2, 3072), 2.5), r"pixel \(0, 0\) is 2\.5"),
        (np.full((2, 3072), -1, np.int64), r"pixel \(0, 0\) is -1"),
    ],
)
def test_cifar_pixels_that_are_not_grey_levels_are_refused(
    tmp_path: Path, values: np.ndarray, match: str
) -> None:
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": values}, protocol=2))
    with pytest.raises(DataError, match=match):
        read_cifar_batch(path)


def test_cifar_pixels_of_another_integer_dtype_within_range_load(tmp_path: Path) -> None:
    values = np.arange(2 * 3072).reshape(2, 3072) % 256
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": values.astype(np.int64)}, protocol=2))
    assert np.array_equal(read_cifar_batch(path).reshape(2, -1), values)


def test_evaluation_runs_in_bounded_batches() -> None:
    flow = MultiScaleRealNVP((3, 8, 8), levels=256, num_scales=2, hidden_channels=2, num_blocks=0)
    sizes = []
    original = flow.log_prob

    def log_prob(x):
        sizes.append(len(x))
        return original(x)

    flow.log_prob = log_prob
    x = dequantize(torch.randint(0, 256, (6000, 3, 8, 8)))
    nll = evaluate_nll(flow, x)
    assert nll.shape == (6000,) and max(sizes) == 2**20 // (3 * 8 * 8) and sum(sizes) == 6000


# -- 6. tables: float64 standardization, a capped log-scale, unrepresentable values ----------
def test_standardization_keeps_the_digits_of_large_offsets() -> None:
    rng = np.random.default_rng(0)
    x = np.c_[1e7 + 0.01 * rng.standard_normal(500), rng.standard_normal(500)]
    flow = RealNVP.for_data(x, num_layers=2, hidden_features=8)  # starts as the identity map
    z = (x - x.mean(0)) / x.std(0)
    exact = -0.5 * (z**2).sum(1) - np.log(2 * np.pi) - np.log(x.std(0)).sum()
    with torch.no_grad():
        log_p = flow.log_prob(torch.as_tensor(x)).double().numpy()
    assert np.abs(log_p - exact).max() < 1e-4


def test_a_shifted_table_gets_the_same_density() -> None:
    """Densities are invariant to translating the data. With float32 statistics a 1e7 offset
    rounded the column to whole numbers (its spread is 0.01) and the density was off by
    hundreds of nats. In float64 the shifted data standardize to values that differ by about
    1e-7, which 20 Adam steps (whose update divides tiny gradients by their own size) turn into
    differences of up to 1e-2 nats on single rows; the mean stays within 1e-3."""
    rng = np.random.default_rng(0)
    x = np.c_[0.01 * rng.standard_normal(400), rng.standard_normal(400)]
    kwargs = {"num_layers": 2, "hidden_features": 8, "steps": 20, "random_state": 0}
    a = RealNVPDensity(**kwargs).fit(x).score_samples(x)
    shifted = x + np.array([1e7, 0.0])
    b = RealNVPDensity(**kwargs).fit(shifted).score_samples(shifted)
    assert abs(a.mean() - b.mean()) < 1e-3 and np.abs(a - b).max() < 0.05


def test_the_log_scale_is_capped() -> None:
    layer = AffineCoupling(torch.tensor([True, False]), MLP(1, 2, 8, 2, zero_last=False))
    with torch.no_grad():
        layer.scale.fill_(50.0)
        layer.conditioner[-1].bias.fill_(100.0)  # tanh(raw_s) = 1
    x = torch.randn(16, 2)
    z, log_det = layer(x)
    assert torch.allclose(log_det, torch.full((16,), 5.0))
    assert torch.isfinite(z).all()
    x_back, _ = layer.inverse(z)
    assert torch.allclose(x_back, x, atol=1e-5)
    uncapped = AffineCoupling(torch.tensor([True, False]), layer.conditioner, max_scale=None)
    uncapped.scale.data.fill_(50.0)
    assert torch.allclose(uncapped(x)[1], torch.full((16,), 50.0))


@pytest.fixture
def table_run(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savetxt(tmp_path / "train.csv", rng.standard_normal((300, 2)), delimiter=",")
    run = tmp_path / "run"
    args = ["--steps", "20", "--layers", "2", "--hidden", "8", "--no-progress"]
    assert main(["train", str(tmp_path / "train.csv"), "--out", str(run), *args]) == 0
    return run


@pytest.mark.parametrize("command", ["score", "encode", "eval"])
def test_a_value_that_overflows_float32_is_refused_naming_row_and_column(
    table_run: Path, tmp_path: Path, capsys, command: str
) -> None:
    data = tmp_path / "new.csv"
    data.write_text("a,b\n0.5,1.0\n1.0,1e300\n")
    out = ["-o", str(tmp_path / "out.csv")] if command != "eval" else []
    line = fails([command, str(table_run), str(data), *out], capsys)
    assert "row 3, column 2" in line and "1e+300" in line and "float32" in line
    assert not (tmp_path / "out.csv").exists()


def test_the_estimator_refuses_a_value_that_overflows_float32() -> None:
    x = np.random.default_rng(0).standard_normal((100, 2))
    est = RealNVPDensity(num_layers=2, hidden_features=8, steps=5, random_state=0).fit(x)
    with pytest.raises(ValueError, match=r"X\[1, 0\] = 1e\+300"):
        est.score_samples(np.array([[0.0, 0.0], [1e300, 0.0]]))


def test_save_model_after_the_library_changes_still_loads_float32_statistics(
    tmp_path: Path,
) -> None:
    """A checkpoint written before the statistics were float64 (float32 tensors) still loads."""
    flow = RealNVP.for_data(np.random.default_rng(0).standard_normal((50, 2)) + 3)
    save_model(tmp_path, flow, {})
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "model.safetensors"))
    old = {k: v.float() if k.endswith(("mean", "std")) else v for k, v in tensors.items()}
    from realnvp.training.checkpoint import build_and_load

    loaded = build_and_load(flow.config, old, tmp_path)
    x = torch.randn(5, 2, dtype=torch.float64) + 3
    assert torch.allclose(loaded.log_prob(x), flow.log_prob(x), atol=1e-5)


def test_the_overflow_error_names_the_right_row_after_dropping_nonfinite_rows(
    table_run: Path, tmp_path: Path, capsys
) -> None:
    data = tmp_path / "new.csv"
    data.write_text("a,b\nnan,1.0\n0.5,1.0\n1.0,1e300\n")
    args = ["score", str(table_run), str(data), "-o", "-", "--drop-nonfinite"]
    assert "row 4, column 2" in fails(args, capsys)


def test_a_column_too_large_to_standardize_is_one_line(tmp_path: Path, capsys) -> None:
    data = tmp_path / "big.csv"
    data.write_text("a,b\n" + "".join(f"{i},{i * i % 7 + 1}e300\n" for i in range(1, 20)))
    args = ["train", str(data), "--out", str(tmp_path / "run"), "--steps", "5"]
    line = fails([*args, "--no-progress"], capsys)
    assert "feature 2" in line and "cannot standardize" in line


def test_a_config_saved_before_the_cap_rebuilds_without_it() -> None:
    from realnvp.models import build_flow

    config = RealNVP(2, num_layers=2, hidden_features=4).spec
    del config["max_scale"]
    assert build_flow(config).config["max_scale"] is None
    image = MultiScaleRealNVP((1, 4, 4), 17, 2, 2, 1).spec
    del image["max_scale"]
    assert build_flow(image).config["max_scale"] is None
