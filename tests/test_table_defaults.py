"""Tables get defaults chosen from their size, and rounded columns are dequantized honestly."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import fails, randomize
from realnvp.cli import main
from realnvp.data.rounding import dequantize, rounding_step, rounding_steps
from realnvp.errors import ConfigError
from realnvp.models import RealNVP, build_flow
from realnvp.models.realnvp import table_sizes
from realnvp.training import fit_data
from realnvp.training.loop import mean_nll
from realnvp.training.runs import split, train_shape

ROWS = [50, 300, 1_000, 10_000, 100_000]


@pytest.mark.parametrize("small, large", list(itertools.pairwise(ROWS)))
def test_a_larger_table_never_gets_a_smaller_model_or_batch(small: int, large: int) -> None:
    (m_small, r_small), (m_large, r_large) = table_sizes(small, 4), table_sizes(large, 4)
    assert m_small["hidden_features"] <= m_large["hidden_features"]
    assert r_small["batch_size"] <= r_large["batch_size"]
    assert r_small["weight_decay"] >= r_large["weight_decay"]


def test_weight_decay_is_the_measured_one_up_to_its_table_and_falls_as_one_over_the_rows() -> None:
    """3e-3 was chosen on 11,200 training rows; beyond them a fixed Gaussian prior on the
    weights (Adam's L2) weighs 1 / rows in the mean loss, so the decay falls with the rows."""
    decay = {rows: table_sizes(rows, 4)[1]["weight_decay"] for rows in (300, 11_200, 22_400)}
    assert decay[300] == decay[11_200] == 3e-3
    assert decay[22_400] == pytest.approx(1.5e-3)
    assert table_sizes(112_000, 2)[1]["weight_decay"] == pytest.approx(3e-4)


@pytest.mark.parametrize("rows", ROWS)
def test_an_epoch_holds_at_least_one_evaluation_or_100_steps(rows: int) -> None:
    """Early stopping must see a small table overfit: validation at least once an epoch."""
    recipe = RealNVP.recipe_for((rows, 3))
    assert recipe.batch_size <= max(rows, 32)
    assert recipe.eval_every <= max(1, rows // recipe.batch_size)
    assert recipe.eval_every <= 100


def test_for_data_takes_the_size_defaults_unless_told_otherwise() -> None:
    x = np.random.default_rng(0).normal(size=(300, 3))
    sized = RealNVP.for_data(x)
    assert sized.config["hidden_features"] == RealNVP.defaults_for(x.shape)["hidden_features"]
    assert sized.config["coupling"] == RealNVP.defaults_for(x.shape)["coupling"]
    told = RealNVP.for_data(x, hidden_features=7, coupling="affine")
    assert told.config["hidden_features"] == 7 and told.config["coupling"] == "affine"


def test_train_shape_is_the_shape_split_leaves() -> None:
    x = np.zeros((1003, 2))
    for fraction in (0.0, 0.1, 0.25):
        assert train_shape(x.shape, fraction) == split(x, fraction, 0)[0].shape


def test_fit_data_without_a_config_trains_with_the_recipe_for_the_rows() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(240, 2))
    _, history = fit_data(x[:200], x[200:], {"num_layers": 2}, seed=0)
    every = RealNVP.recipe_for((200, 2)).eval_every
    assert every < 100 and history.step[:2] == [every, 2 * every]


# -- rounded columns ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values, step",
    [
        ([1, 2, 2, 3, 7], 1.0),
        ([0.5, 1.0, 1.0, 2.5], 0.5),
        ([326, 326, 334, 2750, 18823], 1.0),  # prices in dollars
        ([61.5, 59.8, 59.8, 62.4], 0.1),  # one decimal, inexact in binary
        ([0.23, 0.21, 0.22, 0.23, 1.01], 0.01),
        ([10, 20, 20, 50, 1000], 10.0),
    ],
)
def test_a_rounded_column_gets_its_step(values: list[float], step: float) -> None:
    assert rounding_step(np.array(values, dtype=float)) == pytest.approx(step, rel=1e-12)


@pytest.mark.parametrize(
    "offset, step",
    [(1.7e9, 1.0), (1.7e12, 1.0), (1e9, 0.01), (5e8, 0.1), (-1e6, 0.5)],
)
def test_a_large_offset_does_not_coarsen_the_step(offset: float, step: float) -> None:
    """Epoch seconds and the like: the step is the rounding, not a multiple of it that float
    rounding at 1e9 lets through (whole seconds read as steps of 2.5 before)."""
    k = np.random.default_rng(0).integers(0, 5000, size=300)
    assert rounding_step(offset + np.repeat(k, 2) * step) == pytest.approx(step, rel=1e-6)


def test_minutes_recorded_to_the_second_get_a_sixtieth() -> None:
    seconds = np.random.default_rng(0).integers(100, 300, size=400)
    minutes = np.round(seconds / 60, 6)  # as printed, to 6 decimals
    assert rounding_step(minutes) == pytest.approx(1 / 60, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_continuous_column_is_not_rounded(seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(2000, 2)) * [1.0, 1e4]
    assert rounding_steps(x).tolist() == [0.0, 0.0]


def test_dequantized_values_stay_in_their_cell() -> None:
    x = np.array([[1.0, 0.5], [2.0, 0.25]]).repeat(500, axis=0)
    y = dequantize(x, np.array([1.0, 0.0]), np.random.default_rng(0))
    assert np.all(np.abs(y[:, 0] - x[:, 0]) <= 0.5) and np.all(y[:, 1] == x[:, 1])
    assert abs(np.mean(y[:, 0] - x[:, 0])) < 0.03  # centred on the value, not above it


def counts(n: int, seed: int) -> np.ndarray:
    """Two independent integer columns: Poisson(3) and 10 * Binomial(8, 0.4)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.poisson(3, n), 10 * rng.binomial(8, 0.4, n)], axis=1).astype(float)


COUNT_ENTROPY = float(stats.poisson(3).entropy() + stats.binom(8, 0.4).entropy())


def test_for_data_finds_the_rounded_columns() -> None:
    x = np.concatenate([counts(500, 0), np.random.default_rng(0).normal(size=(500, 1))], axis=1)
    flow = RealNVP.for_data(x)
    assert flow.rounding == [1.0, 10.0, 0.0]
    assert flow.log_cell == pytest.approx(math.log(10.0))
    assert RealNVP.for_data(x, dequantize=None).rounding is None
    again = build_flow(flow.spec)
    assert again.rounding == flow.rounding


def test_a_continuous_table_keeps_its_config_as_before() -> None:
    flow = RealNVP.for_data(np.random.default_rng(0).normal(size=(500, 2)))
    assert flow.rounding is None and "dequantize" not in flow.config


@pytest.mark.parametrize("bad", [[1.0], [1.0, -1.0], [1.0, float("nan")]])
def test_bad_steps_are_refused(bad: list[float]) -> None:
    with pytest.raises(ConfigError, match="dequantize"):
        RealNVP(features=2, dequantize=bad)


def test_training_noise_is_fresh_each_step_and_repeatable() -> None:
    flow = RealNVP.for_data(counts(500, 0))
    x = flow.as_input(counts(64, 1))
    a, b = flow.training_batch(x, 3, 0), flow.training_batch(x, 4, 0)
    assert torch.equal(a, flow.training_batch(x, 3, 0)) and not torch.equal(a, b)
    assert bool(((a - x).abs() <= torch.tensor([0.5, 5.0], dtype=x.dtype)).all())
    assert torch.equal(flow.prepare(counts(64, 1), 7), flow.prepare(counts(64, 1), 7))


def test_the_nll_of_rounded_data_cannot_beat_their_entropy() -> None:
    """Scored on dequantized rows, minus the cells' log-volume (``log_cell``), a flow's NLL
    bounds the NLL of the integers, so it cannot be below their entropy; trained on them with
    fresh noise, it comes close to it."""
    x_train, x_val, x_test = counts(3000, 0), counts(500, 1), counts(4000, 2)
    flow, _ = fit_data(x_train, x_val, {"num_layers": 4, "hidden_features": 32}, seed=0)
    nll = mean_nll(flow, flow.prepare(x_test, 5)) - flow.log_cell
    assert nll >= COUNT_ENTROPY - 0.02  # 4,000 rows: SE of the mean about 0.02
    assert nll <= COUNT_ENTROPY + 0.15


def test_train_says_which_columns_it_dequantized(tmp_path, capsys) -> None:
    data = tmp_path / "counts.csv"
    x = np.c_[counts(300, 0), np.random.default_rng(0).normal(size=300)]
    data.write_text(
        "visits,score,width\n" + "".join(f"{a:g},{b:g},{float(c)!r}\n" for a, b, c in x)
    )
    run = tmp_path / "run"
    args = ["train", str(data), "--steps", "3", "--no-progress"]
    assert main([*args, "--out", str(run)]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "visits (step 1)" in line and "score (step 10)" in line and "width" not in line
    assert f"add {-math.log(10):+.4f}" in line  # the NLL bound is the NLL minus log 10
    assert json.loads((run / "model.json").read_text())["model"]["dequantize"] == [1, 10, 0]
    assert main(["eval", str(run), str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rounded_nll_bound"] == pytest.approx(result["nll"] - math.log(10))
    assert main([*args, "--out", str(tmp_path / "plain"), "--dequantize", "none"]) == 0
    assert "dequantized" not in capsys.readouterr().err
    assert "dequantize" not in json.loads((tmp_path / "plain" / "model.json").read_text())["model"]


# -- rolling masks -----------------------------------------------------------------------------
def test_rolling_masks_split_every_pair_of_features_and_alternating_ones_do_not() -> None:
    def split_pairs(flow: RealNVP) -> set[tuple[int, int]]:
        return {
            (i, j)
            for layer in flow.couplings
            for i in range(5)
            for j in range(5)
            if bool(layer.mask[i]) and not bool(layer.mask[j])
        }

    every = {(i, j) for i in range(5) for j in range(5) if i != j}
    assert split_pairs(RealNVP(5, num_layers=8, masks="rolling")) == every
    assert (0, 1) not in split_pairs(RealNVP(5, num_layers=8))


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_a_rolling_flow_is_exact(coupling: str) -> None:
    torch.manual_seed(0)
    flow = randomize(
        RealNVP(5, num_layers=6, hidden_features=16, coupling=coupling, masks="rolling")
    )
    flow = flow.double()
    x = torch.randn(7, 5, dtype=torch.float64)
    z, log_det = flow.transform(x)
    assert torch.allclose(flow.transform.inverse(z)[0], x, atol=1e-10)
    jac = torch.stack(
        [torch.autograd.functional.jacobian(lambda r: flow.transform(r[None])[0][0], r) for r in x]
    )
    assert torch.allclose(log_det, torch.linalg.slogdet(jac)[1], atol=1e-10)
    again = build_flow(flow.spec)
    assert again.config["masks"] == "rolling"
    assert [m.mask.tolist() for m in again.couplings] == [m.mask.tolist() for m in flow.couplings]


def test_masks_are_checked() -> None:
    with pytest.raises(ConfigError, match="masks"):
        RealNVP(3, masks="random")


def test_a_run_resumes_with_its_own_command_repeated(tmp_path, capsys) -> None:
    """The words a command gave (auto, none, alternate) match the settings they resolved to."""
    data = tmp_path / "counts.csv"
    x = np.c_[counts(300, 0), np.random.default_rng(0).normal(size=300)]
    data.write_text("".join(f"{a:g},{b:g},{float(c)!r}\n" for a, b, c in x))
    for how, masks in (("auto", "rolling"), ("none", "alternate")):
        run = str(tmp_path / how)
        args = ["train", str(data), "--steps", "3", "--no-progress", "--out", run]
        args += ["--dequantize", how, "--masks", masks]
        assert main(args) == 0
        assert main([*args, "--resume"]) == 0
    auto = ["train", str(data), "--steps", "3", "--no-progress", "--out", str(tmp_path / "auto")]
    capsys.readouterr()
    line = fails([*auto, "--resume", "--dequantize", "none"], capsys)
    assert "dequantizing" in line and "--dequantize none" in line


def test_spline_options_without_splines_are_refused(tmp_path, capsys) -> None:
    args = ["train", "moons", "--n", "100", "--steps", "1", "--out", str(tmp_path / "r")]
    line = fails([*args, "--coupling", "affine", "--bins", "4"], capsys)
    assert "--bins" in line and "--coupling affine" in line


def test_rows_to_score_get_the_same_noise_on_every_process(monkeypatch) -> None:
    """Validation and eval rows are dequantized from the seed alone, so every process of a
    torchrun job (and a run resumed on another number of them) scores the same numbers."""
    from realnvp import collectives

    flow = RealNVP.for_data(counts(500, 0))
    alone = flow.prepare(counts(64, 1), 7)
    monkeypatch.setattr(collectives, "world_size", lambda: 2)
    monkeypatch.setattr(collectives, "rank", lambda: 1)
    assert torch.equal(flow.prepare(counts(64, 1), 7), alone)


def test_encode_then_decode_gives_back_the_rows_of_a_dequantizing_run(tmp_path, capsys) -> None:
    """encode and score work on the rows as given: decode(encode(x)) is x, and a row's score
    is the same each time (eval's NLL is the one of dequantized rows)."""
    data = tmp_path / "counts.csv"
    data.write_text("".join(f"{a:g},{b:g}\n" for a, b in counts(300, 0)))
    run = str(tmp_path / "run")
    assert main(["train", str(data), "--steps", "3", "--no-progress", "--out", run]) == 0
    z, x = tmp_path / "z.csv", tmp_path / "x.csv"
    assert main(["encode", run, str(data), "-o", str(z)]) == 0
    assert main(["decode", run, str(z), "-o", str(x)]) == 0
    back = np.loadtxt(x, delimiter=",", skiprows=1)
    assert np.allclose(back, counts(300, 0), atol=1e-4)
