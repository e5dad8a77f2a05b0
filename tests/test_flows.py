"""The flow's three exact operations: log-likelihood, sampling, latent inference."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.datasets import make_moons

from conftest import DEVICES
from helpers import randomize
from realnvp import RealNVP
from realnvp.bijections import Compose


def random_flow(
    features: int = 2, num_layers: int = 6, dtype: torch.dtype = torch.float64, std: float = 0.3
) -> RealNVP:
    torch.manual_seed(0)
    flow = RealNVP(features, num_layers=num_layers, hidden_features=32)
    return randomize(flow.to(dtype), std=std)


def test_new_flow_is_exactly_the_identity() -> None:
    flow = RealNVP(5, num_layers=4)
    x = torch.randn(9, 5)
    z, log_det = flow.transform(x)
    assert torch.equal(z, x) and torch.equal(log_det, torch.zeros(9))


def test_decode_inverts_encode() -> None:
    flow = random_flow(features=4)
    x = torch.randn(64, 4, dtype=torch.float64)
    assert (flow.encode(x) - x).abs().max() > 1e-2
    assert (flow.decode(flow.encode(x)) - x).abs().max() < 1e-10


def test_fifty_layer_float32_round_trip() -> None:
    flow = random_flow(features=2, num_layers=50, dtype=torch.float32, std=0.1)
    x = torch.randn(1000, 2)
    z = flow.encode(x)
    assert (z - x).abs().max() > 1e-1
    assert (flow.decode(z) - x).abs().max() < 1e-4


def test_log_prob_is_change_of_variables() -> None:
    flow = random_flow(features=3)
    x = torch.randn(16, 3, dtype=torch.float64)
    z, log_det = flow.transform(x)
    expected = -0.5 * (z**2).sum(1) - 1.5 * math.log(2 * math.pi) + log_det
    assert torch.allclose(flow.log_prob(x), expected, atol=1e-12)


def test_sample_and_log_prob_agrees_with_log_prob() -> None:
    flow = random_flow(features=3)
    x, log_prob = flow.sample_and_log_prob(256)
    assert torch.allclose(log_prob, flow.log_prob(x), atol=1e-10)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sample_decodes_tempered_base_draws(temperature: float) -> None:
    flow = random_flow()
    x = flow.sample(100, temperature, generator=torch.Generator().manual_seed(3))
    z = flow.base.sample(100, 1.0, generator=torch.Generator().manual_seed(3)) * temperature
    assert torch.allclose(flow.encode(x), z, atol=1e-10)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_nonpositive_temperature_is_refused(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        random_flow().sample(3, temperature)


def test_density_integrates_to_one() -> None:
    flow = random_flow(features=2, num_layers=6)
    # Where does the mass lie? Bound the grid by samples, then integrate on it.
    with torch.no_grad():
        s = flow.sample(20000, generator=torch.Generator().manual_seed(0))
        lo, hi = s.min(0).values - 3, s.max(0).values + 3
        n = 600
        gx = torch.linspace(float(lo[0]), float(hi[0]), n, dtype=torch.float64)
        gy = torch.linspace(float(lo[1]), float(hi[1]), n, dtype=torch.float64)
        xx, yy = torch.meshgrid(gx, gy, indexing="ij")
        p = flow.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp().reshape(n, n)
        mass = torch.trapezoid(torch.trapezoid(p, gy, dim=1), gx).item()
    assert abs(mass - 1) < 0.01, mass


def test_standardization_reports_density_in_data_units() -> None:
    torch.manual_seed(0)
    flow = randomize(RealNVP(2, num_layers=4, hidden_features=16, standardize=True).double())
    mean = torch.tensor([3.0, -1.0], dtype=torch.float64)
    std = torch.tensor([0.5, 4.0], dtype=torch.float64)
    flow.set_standardization(mean, std)
    x = torch.randn(10, 2, dtype=torch.float64) * std + mean
    # p_X(x) = p_U((x - mean) / std) / prod(std), with p_U the flow made of the couplings alone.
    z, log_det = Compose(flow.couplings)((x - mean) / std)
    expected = flow.base.log_prob(z) + log_det - std.log().sum()
    assert torch.allclose(flow.log_prob(x), expected, atol=1e-12)


def test_set_standardization_needs_a_standardizing_flow() -> None:
    with pytest.raises(ValueError, match="standardize=False"):
        RealNVP(2).set_standardization(torch.zeros(2), torch.ones(2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", DEVICES)
def test_device_and_dtype_follow_the_model(device: str, dtype: torch.dtype) -> None:
    flow = random_flow().to(device=device, dtype=dtype)
    x = flow.sample(5)
    assert x.device.type == device and x.dtype == dtype
    assert flow.log_prob(x).dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert (flow.decode(flow.encode(x)) - x).abs().max() < tol


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_batch_of_one_under_no_grad_and_inference_mode(context) -> None:
    flow = random_flow(dtype=torch.float32)
    x = torch.randn(1, 2)
    expected = flow.log_prob(x).detach()
    with context():
        assert torch.allclose(flow.log_prob(x), expected)
        assert flow.sample(1).shape == (1, 2)
        assert (flow.decode(flow.encode(x)) - x).abs().max() < 1e-5


def test_state_dict_and_config_rebuild_the_flow() -> None:
    torch.manual_seed(0)
    flow = randomize(
        RealNVP(
            3,
            num_layers=5,
            hidden_features=8,
            activation="tanh",
            mask=[False, True, False],
            standardize=True,
        )
    )
    copy = RealNVP(**flow.config)
    copy.load_state_dict(flow.state_dict())
    x = torch.randn(4, 3)
    assert torch.equal(copy.log_prob(x), flow.log_prob(x))


def test_user_mask_alternates_with_its_complement() -> None:
    flow = RealNVP(3, num_layers=3, mask=[False, True, False])
    masks = [layer.mask.tolist() for layer in flow.couplings]
    assert masks == [[False, True, False], [True, False, True], [False, True, False]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": 1}, "features: Real NVP needs at least 2"),
        ({"features": 2, "num_layers": 0}, "num_layers"),
        ({"features": 2, "coupling": "quadratic"}, "coupling"),
        ({"features": 3, "mask": [True, False]}, "shape"),
        ({"features": 2, "mask": [True, True]}, "at least one"),
        ({"features": 2, "activation": "sigmoidish"}, "activation: unknown 'sigmoidish'"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RealNVP(**kwargs)


@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_short_training_on_two_moons_lowers_the_nll(coupling: str) -> None:
    x, _ = make_moons(2000, noise=0.05, random_state=0)
    x = torch.tensor(x, dtype=torch.float32)
    torch.manual_seed(0)
    flow = RealNVP(2, num_layers=4, hidden_features=32, coupling=coupling, standardize=True)
    flow.set_standardization(x.mean(0), x.std(0))
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    with torch.no_grad():
        before = -flow.log_prob(x).mean().item()
    for _step in range(200):
        batch = x[torch.randint(0, len(x), (256,))]
        loss = -flow.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = -flow.log_prob(x).mean().item()
    assert after < before - 0.5, (before, after)


def test_trajectory_gives_every_intermediate_both_ways() -> None:
    flow = random_flow(features=2, num_layers=5)
    x = torch.randn(8, 2, dtype=torch.float64)
    forward = flow.transform.trajectory(x)
    assert len(forward) == 6 and torch.equal(forward[0], x)
    assert torch.allclose(forward[-1], flow.encode(x), atol=1e-12)
    for i, layer in enumerate(flow.transform.layers):
        assert torch.allclose(forward[i + 1], layer(forward[i])[0], atol=1e-12)
    backward = flow.transform.inverse_trajectory(forward[-1])
    assert len(backward) == 6
    for a, b in zip(backward, reversed(forward), strict=True):
        assert torch.allclose(a, b, atol=1e-10)
