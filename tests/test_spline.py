"""Rational-quadratic spline couplings: the spline itself (identity at zero, monotonic, knots to
knots, linear tails), the coupling built on it, and RealNVP(coupling="spline") as a density that
saves, loads and trains. The exact-inverse and log-det contract is in test_bijections."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from helpers import randomize
from realnvp import RealNVP
from realnvp.bijections import SplineCoupling, rational_quadratic_spline
from realnvp.bijections.spline import _derivatives, _knots
from realnvp.cli import main
from realnvp.models import build_flow
from realnvp.nn import MLP
from realnvp.training.checkpoint import load_model, save_model
from test_bijections import build

B, K = 2.0, 6


def random_params(n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Raw widths, heights and derivatives of ``n`` random splines: (n, K), (n, K), (n, K - 1)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(n, K), (n, K), (n, K - 1)]
    return tuple(torch.randn(s, generator=g, dtype=torch.float64) for s in sizes)


def spline(x: Tensor, params: tuple[Tensor, ...], inverse: bool = False) -> tuple[Tensor, Tensor]:
    return rational_quadratic_spline(x, *params, bound=B, inverse=inverse)


def test_zero_parameters_are_the_identity() -> None:
    """Fails if the derivatives' softplus lacks its offset (a raw 0 would be a slope of 0.69)."""
    x = torch.linspace(-2 * B, 2 * B, 101, dtype=torch.float64)
    zeros = tuple(torch.zeros(101, k, dtype=torch.float64) for k in (K, K, K - 1))
    for inverse in (False, True):
        y, log_det = spline(x, zeros, inverse)
        assert (y - x).abs().max() < 1e-12 and log_det.abs().max() < 1e-12


def test_a_new_spline_flow_is_the_identity() -> None:
    """Fails if the coupling reads the zero-initialised conditioner into anything but equal bins
    and unit derivatives."""
    flow = RealNVP(3, num_layers=4, coupling="spline").double()
    x = 3 * torch.randn(50, 3, dtype=torch.float64)
    z, log_det = flow.transform(x)
    assert (z - x).abs().max() < 1e-12 and log_det.abs().max() < 1e-12


def test_the_spline_is_strictly_increasing() -> None:
    """Fails if a bin's width or height, or a derivative, can go negative (a fold)."""
    x = torch.linspace(-2 * B, 2 * B, 2001, dtype=torch.float64)
    y, log_det = spline(x, tuple(p[:1].expand(len(x), -1) for p in random_params(1, seed=4)))
    assert (y.diff() > 0).all() and torch.isfinite(log_det).all()


def test_knots_map_to_knots_both_ways() -> None:
    """Each bin edge x_k goes to y_k and back exactly, the ends -B and B included. Fails on an
    off-by-one bin search (a value exactly on an edge, or at B, read in the wrong bin)."""
    params = random_params(1, seed=1)
    xs, ys = _knots(params[0], B)[0], _knots(params[1], B)[0]
    expand = tuple(p.expand(K + 1, -1) for p in params)
    assert xs[0] == -B and xs[-1] == B and ys[0] == -B and ys[-1] == B
    assert torch.allclose(spline(xs, expand)[0], ys, atol=1e-14, rtol=0)
    assert torch.allclose(spline(ys, expand, inverse=True)[0], xs, atol=1e-14, rtol=0)


def test_the_knot_derivatives_are_the_slopes_there() -> None:
    """At each knot the log-derivative is log d_k, and 0 at -B and B where the tails join. Fails
    if the boundary derivatives are not 1 (a kink where the tails start) or d is misindexed."""
    params = random_params(1, seed=2)
    xs, d = _knots(params[0], B)[0], _derivatives(params[2])[0]
    _, log_det = spline(xs, tuple(p.expand(K + 1, -1) for p in params))
    assert torch.allclose(log_det, d.log(), atol=1e-12, rtol=0)
    assert d[0] == 1 and d[-1] == 1  # the tails' slope


def test_the_tails_are_the_identity_both_ways() -> None:
    """Fails if values beyond the bound are clamped or transformed instead of passed through."""
    x = torch.tensor([-1e6, -3 * B, -B - 1e-9, B + 1e-9, 3 * B, 1e6], dtype=torch.float64)
    params = random_params(len(x), seed=3)
    for inverse in (False, True):
        y, log_det = spline(x, params, inverse)
        assert torch.equal(y, x) and torch.equal(log_det, torch.zeros_like(x))


def test_the_inverse_inverts_across_the_range() -> None:
    """The inverse's quadratic root, on a dense grid of the whole range."""
    x = torch.linspace(-1.5 * B, 1.5 * B, 3001, dtype=torch.float64)
    params = tuple(p.expand(len(x), -1) for p in random_params(1, seed=5))
    y, log_det = spline(x, params)
    x2, inverse_log_det = spline(y, params, inverse=True)
    assert (x2 - x).abs().max() < 1e-12
    assert (log_det + inverse_log_det).abs().max() < 1e-10


def test_the_contract_cases_reach_the_interior_and_the_tails() -> None:
    """Fails if the contract's spline inputs stop exercising one of the two regimes."""
    for name in ("spline-D4", "spline-D3-context", "realnvp-spline-transform"):
        _, x = build(name)
        assert (x.abs() < 1.5).any() and (x.abs() > 1.5).any(), name


def test_rows_in_column_major_order_are_scored_without_a_copy_warning() -> None:
    """A table read from a column-major array (pandas and numpy give them) reaches the spline
    as a non-contiguous slice; ``torch.searchsorted`` then warned on stderr (once per process,
    hence a fresh one here) and copied the values. The scores are the same either way."""
    code = (
        "import numpy as np, torch, warnings\n"
        "from realnvp import RealNVP\n"
        "warnings.filterwarnings('error', message='.*searchsorted')\n"
        "torch.manual_seed(0)\n"
        "f = RealNVP(features=4, num_layers=2, hidden_features=8, coupling='spline')\n"
        "x = torch.randn(6, 4)\n"
        "fx = torch.as_tensor(np.asfortranarray(x.numpy()))\n"
        "assert torch.allclose(f.log_prob(fx), f.log_prob(x), atol=1e-6)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]


def test_the_coupling_sizes_its_conditioner_for_3k_minus_1_numbers_per_feature() -> None:
    asked = []

    def factory(n_in: int, n_out: int) -> MLP:
        asked.append((n_in, n_out))
        return MLP(n_in, n_out, 8, 1)

    SplineCoupling(torch.arange(5) < 2, factory, bins=4, context_features=3)
    assert asked == [(2 + 3, 3 * (3 * 4 - 1))]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": 1}, "bins: must be from 2 to 999"),
        # each bin takes at least MIN_BIN of the width: 1,000 bins would leave a negative rest
        ({"bins": 1000}, "bins: must be from 2 to 999"),
        ({"bound": 0.0}, "bound: must be positive"),
        ({"mask": torch.ones(2, 2, 2, dtype=torch.bool).tril()}, "mask: takes a 1-D mask"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    args = {"mask": torch.tensor([True, False]), "conditioner": lambda i, o: MLP(i, o, 4, 1)}
    with pytest.raises(ValueError, match=message):
        SplineCoupling(**{**args, **kwargs})


def random_spline_flow(dtype: torch.dtype = torch.float64, **options) -> RealNVP:
    torch.manual_seed(0)
    flow = RealNVP(
        2, num_layers=4, hidden_features=16, coupling="spline", tail_bound=3.0, **options
    )
    return randomize(flow.to(dtype), std=0.2)


def test_the_spline_flow_density_integrates_to_one() -> None:
    """Fails on any log-det that is not the true log-Jacobian (e.g. a dropped factor 2 on the
    denominator), which would change the total mass."""
    flow = random_spline_flow()
    grid = torch.linspace(-8, 8, 321, dtype=torch.float64)  # the mass beyond is below 1e-5
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.flatten(), yy.flatten()], 1)
    with torch.no_grad():
        assert (flow.encode(points) - points).abs().max() > 0.1  # not the identity
        p = flow.log_prob(points).exp()
    mass = p.sum().item() * (grid[1] - grid[0]).item() ** 2
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_only_spline_configs_record_bins_and_tail_bound() -> None:
    """Affine and additive configs stay as they were (old checkpoints compare equal)."""
    assert not {"bins", "tail_bound"} & set(RealNVP(2).config)
    assert not {"bins", "tail_bound"} & set(RealNVP(2, coupling="additive").config)
    config = RealNVP(2, coupling="spline", bins=5, tail_bound=2.5).config
    assert (config["coupling"], config["bins"], config["tail_bound"]) == ("spline", 5, 2.5)


def test_a_spline_flow_saves_and_loads_from_its_config(tmp_path: Path) -> None:
    """Fails if bins or tail_bound are left out of the config: the flow would rebuild with the
    defaults, and refuse its weights (another bin count) or compute another density (bound)."""
    flow = random_spline_flow(torch.float32, bins=5, standardize=True).eval()
    flow.set_standardization(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5]))
    save_model(tmp_path, flow, {})
    loaded, config = load_model(tmp_path)
    assert config["model"] == flow.spec == build_flow(flow.spec).spec
    x = 4 * torch.randn(64, 2, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(x), flow.log_prob(x))


def test_the_command_line_trains_a_spline_flow(tmp_path: Path) -> None:
    """``--coupling spline --bins --tail-bound`` reach the saved model."""
    run = tmp_path / "run"
    options = ["--coupling", "spline", "--bins", "4", "--tail-bound", "3", "--layers", "2"]
    args = ["train", "moons", "--n", "200", "--steps", "2", "--out", str(run), "--no-progress"]
    assert main([*args, *options]) == 0
    model = json.loads((run / "model.json").read_text())["model"]
    assert (model["coupling"], model["bins"], model["tail_bound"]) == ("spline", 4, 3.0)
    assert load_model(run)[0].couplings[0].bins == 4


def three_lines(n: int, g: torch.Generator) -> Tensor:
    """x1 on three narrow modes at -2, 0 and 2, x2 normal: a multimodal marginal that an affine
    coupling of x1 given x2 cannot split, and a spline can."""
    modes = torch.tensor([-2.0, 0.0, 2.0])[torch.randint(0, 3, (n,), generator=g)]
    return torch.stack(
        [modes + 0.1 * torch.randn(n, generator=g), 0.5 * torch.randn(n, generator=g)], 1
    )


def trained_nll(coupling: str) -> float:
    g = torch.Generator().manual_seed(0)
    x, held_out = three_lines(2000, g), three_lines(2000, g)
    torch.manual_seed(0)
    flow = RealNVP(2, num_layers=2, hidden_features=32, coupling=coupling, standardize=True)
    flow.set_standardization(x.mean(0), x.std(0))
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(40):
        loss = -flow.log_prob(x[torch.randint(0, len(x), (256,), generator=g)]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return -flow.log_prob(held_out).mean().item()


def test_splines_fit_a_multimodal_marginal_that_affine_couplings_cannot() -> None:
    """Same size, same 40 steps: the spline flow is about 1 nat better (1.5 vs 2.6 over seeds).
    Fails if the spline cannot bend (its parameters ignored or frozen)."""
    spline_nll, affine_nll = trained_nll("spline"), trained_nll("affine")
    assert spline_nll < affine_nll - 0.5, (spline_nll, affine_nll)
