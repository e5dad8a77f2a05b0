"""The model interface every kind shares: built from data or from its saved spec, its inputs
prepared, its metric reported, its recipe its own; and the checks that callers never need to ask
which kind they hold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import randomize
from realnvp.bijections import AdditiveCoupling, AffineCoupling, channel_mask
from realnvp.models import (
    KINDS,
    Flow,
    MultiScaleRealNVP,
    RealNVP,
    build_flow,
    default_scales,
    kind_of,
)
from realnvp.nn import MLP
from realnvp.training import TrainConfig, fit_data, train_run


def table_data(n: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.c_[rng.normal(5.0, 2.0, n), rng.normal(-1.0, 0.5, n), rng.normal(0, 1, n)]


def image_data(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 17, (n, 1, 8, 8)).astype(np.uint8)


# each kind: (its spec for fit_data, training data, small options)
KIND_CASES = {
    "realnvp": ({"num_layers": 2, "hidden_features": 8}, table_data),
    "multiscale": (
        {"type": "multiscale", "levels": 17, "hidden_channels": 4, "num_blocks": 1},
        image_data,
    ),
}


def build(kind: str) -> tuple[Flow, np.ndarray]:
    model, data = KIND_CASES[kind]
    x = data()
    options = {k: v for k, v in model.items() if k != "type"}
    return kind_of(model).for_data(x, **options), x


def test_every_kind_has_a_case() -> None:
    assert set(KIND_CASES) == set(KINDS)


@pytest.mark.parametrize("kind", KIND_CASES)
def test_a_kind_rebuilds_from_its_spec_to_the_same_density(kind: str) -> None:
    """``build_flow(flow.spec)`` plus the weights is the same model: the same log-densities.
    Fails if a kind leaves a constructor argument out of its config, or records another type."""
    flow, x = build(kind)
    randomize(flow, std=0.05)
    flow.eval()
    rebuilt = build_flow(flow.spec)
    assert type(rebuilt) is type(flow) and rebuilt.spec == flow.spec
    rebuilt.load_state_dict(flow.state_dict())
    rebuilt.eval()
    x_in = flow.prepare(x, seed=3)
    with torch.no_grad():
        assert torch.equal(rebuilt.log_prob(x_in), flow.log_prob(x_in))


@pytest.mark.parametrize("kind", KIND_CASES)
def test_a_kind_takes_its_training_data_the_way_it_is_scored(kind: str) -> None:
    """``prepare`` is deterministic in its seed, on the model's device and ``input_dtype``; a
    training batch at a step is what the model trains on: the data for tables, the data plus
    fresh noise in [0, 1) for images, the same for the same (seed, step)."""
    flow, x = build(kind)
    a, b = flow.prepare(x, seed=1), flow.prepare(x, seed=1)
    assert torch.equal(a, b) and a.dtype == flow.input_dtype and a.device == flow.device
    raw = flow.as_input(x)
    batch = flow.training_batch(raw, step=5, seed=0)
    assert torch.equal(batch, flow.training_batch(raw, step=5, seed=0))
    if flow.metric is None:  # a table: scored as given
        assert torch.equal(a, raw) and torch.equal(batch, raw)
    else:  # images: dequantized, differently at each step
        assert bool(((batch - raw >= 0) & (batch - raw < 1)).all())
        assert not torch.equal(batch, flow.training_batch(raw, step=6, seed=0))
        assert not torch.equal(flow.prepare(x, seed=2), a)


def test_the_image_metric_is_bits_per_dimension() -> None:
    flow, _ = build("multiscale")
    assert flow.metric is not None and flow.metric.name == "bits_per_dim"
    assert flow.metric.of_nll(64 * math.log(2)) == pytest.approx(1.0, rel=1e-12)
    assert build("realnvp")[0].metric is None


@pytest.mark.parametrize("kind", KIND_CASES)
def test_fit_data_trains_every_kind(kind: str) -> None:
    """One path from rows to a fitted flow for every kind: the model the spec names, returned in
    evaluation mode, and a validation NLL that falls."""
    model, data = KIND_CASES[kind]
    x = data(96)
    config = TrainConfig(steps=30, batch_size=16, lr=3e-3, eval_every=10, patience=None)
    flow, history = fit_data(x[:80], x[80:], model, config, seed=0)
    assert type(flow) is kind_of(model) and not flow.training
    assert history.val_nll[-1] < history.val_nll[0]


def test_the_recipes_are_the_kinds_own() -> None:
    """The image recipe is the paper code's; tables have no clip and no L2."""
    assert MultiScaleRealNVP.recipe.batch_size == 64
    assert MultiScaleRealNVP.recipe.grad_clip == 100.0 and MultiScaleRealNVP.recipe.scale_l2 == 5e-5
    assert RealNVP.recipe == TrainConfig() and RealNVP.recipe.grad_clip is None


def test_python_and_the_command_line_build_the_same_image_model(tmp_path) -> None:
    """The number of scales has one default, ``default_scales``: a 28x28 model built in Python
    and one trained from the command line's path agree (in 0.1.0 Python gave 2 scales, the CLI
    3)."""
    x = np.random.default_rng(0).integers(0, 256, (16, 1, 28, 28)).astype(np.uint8)
    in_python = MultiScaleRealNVP((1, 28, 28), hidden_channels=2, num_blocks=1)
    model = {"type": "multiscale", "levels": 256, "hidden_channels": 2, "num_blocks": 1}
    config = TrainConfig(steps=1, batch_size=8)
    trained, _ = train_run(tmp_path / "run", x, model, config, val_fraction=0.0, device="cpu")
    assert in_python.config == trained.config
    assert in_python.config["num_scales"] == default_scales(28, 28) == 3


@pytest.mark.parametrize(
    ("coupling", "mask", "sizes"),
    [
        (AffineCoupling, torch.arange(5) < 3, (3, 4)),  # keep 3, transform 2: s and t each
        (AdditiveCoupling, torch.arange(5) < 3, (3, 2)),  # t alone
        (AffineCoupling, channel_mask(4, 2, 2), (4, 8)),  # channels in, 2 per channel out
    ],
)
def test_a_coupling_builds_its_conditioner_from_its_sizes(coupling, mask, sizes) -> None:
    """The coupling, not the caller, works out the conditioner's (in, out) sizes."""
    asked = []

    def factory(n_in: int, n_out: int) -> torch.nn.Module:
        asked.append((n_in, n_out))
        if mask.dim() == 1:
            return MLP(n_in, n_out, 8, 1)
        return torch.nn.Conv2d(n_in, n_out, 3, padding=1)

    layer = coupling(mask, factory)
    assert asked == [sizes]
    x = torch.randn(3, *mask.shape)
    assert layer(x)[0].shape == x.shape


def test_the_flow_knows_its_device_and_dtype() -> None:
    flow = RealNVP(2, num_layers=2, hidden_features=4).double()
    assert flow.device == torch.device("cpu") and flow.dtype == torch.float64
    assert flow.sample(3).dtype == torch.float64


def test_regularization_sums_what_each_layer_declares() -> None:
    """The L2 term is the sum of squares of every ``l2_terms()``: each affine coupling's scale
    and, in the image model, each weight-norm magnitude; the flow itself knows neither."""
    flow = RealNVP(2, num_layers=3, hidden_features=4, scale_init=0.5)
    assert flow.regularization().item() == pytest.approx(3 * 0.25)


def test_an_image_model_names_what_does_not_fit() -> None:
    """Without the data's own count of levels, images whose brightest pixel is below the
    model's levels fit (a dark batch is still 17-level data); a value beyond them does not."""
    flow, x = build("multiscale")
    assert flow.mismatch(np.minimum(x, 15)) is None
    assert flow.mismatch(x, levels=17) is None
    assert "with 256 grey levels" in flow.mismatch(x, levels=256)
    assert "a grey level of 40" in flow.mismatch(np.where(x > 0, 40, 0))
    assert "shape (1, 4, 4)" in flow.mismatch(x[:, :, :4, :4])
