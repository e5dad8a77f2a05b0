"""The speed paths keep the flow exact: bf16 conditioners and the fused optimizer."""

from __future__ import annotations

import shutil

import pytest
import torch

from helpers import randomize
from realnvp import RealNVP
from realnvp.audit import jacobian_log_det
from realnvp.training.checkpoint import build_flow
from realnvp.training.loop import TrainConfig, fit, make_optimizer


def bf16_pair(std: float) -> tuple[RealNVP, RealNVP]:
    """A random float32 flow and the same weights with bf16 conditioners."""
    torch.manual_seed(0)
    flow = randomize(RealNVP(3, num_layers=6, hidden_features=32), std=std).float()
    fast = RealNVP(3, num_layers=6, hidden_features=32, conditioner_dtype="bfloat16")
    fast.load_state_dict(flow.state_dict())
    return flow, fast


def test_bf16_couplings_are_exactly_invertible_with_exact_log_dets() -> None:
    flow, fast = bf16_pair(std=0.3)
    x = torch.randn(256, 3)
    # the network really runs in bf16: the map differs from the float32 one
    assert (fast.encode(x) - flow.encode(x)).abs().max() > 1e-3
    for layer in fast.couplings:
        z, log_det = layer(x)
        x_back, inverse_log_det = layer.inverse(z)
        # each coupling sees the same kept values both ways, so it inverts to float32 rounding
        assert (x_back - x).abs().max() < 1e-5
        assert (log_det + inverse_log_det).abs().max() < 1e-5
        # and its log-det is exactly that of the map it computes (autograd per layer)
        exact = jacobian_log_det(lambda v, f=layer: f(v), x[:16])
        assert (log_det[:16] - exact).abs().max() < 1e-5
        x = z.detach()


def test_bf16_stack_round_trip_on_a_well_scaled_flow() -> None:
    """Through a stack, the inverse's float32 rounding reaches the bf16 conditioners of earlier
    layers, where a value next to a bf16 rounding boundary can round the other way. On a
    well-scaled flow (latents of order 1) the round trip stays at float32 precision."""
    _, fast = bf16_pair(std=0.1)
    x = torch.randn(4096, 3)
    with torch.no_grad():
        z = fast.encode(x)
        assert z.abs().max() < 10
        assert (fast.decode(z) - x).abs().max() < 1e-5


def test_bf16_option_survives_the_checkpoint_config() -> None:
    _, fast = bf16_pair(std=0.3)
    assert fast.config["conditioner_dtype"] == "bfloat16"
    rebuilt = build_flow(fast.config)
    rebuilt.load_state_dict(fast.state_dict())
    x = torch.randn(16, 3)
    assert torch.equal(rebuilt.log_prob(x), fast.log_prob(x))


def test_bad_conditioner_dtype() -> None:
    with pytest.raises(ValueError, match="conditioner_dtype"):
        RealNVP(2, conditioner_dtype="int8")


def test_fused_optimizer_takes_adams_step() -> None:
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    before = a.weight.detach().clone()
    x = torch.randn(8, 4)
    opt_a = make_optimizer(a.parameters(), lr=1e-2)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2, foreach=False)
    for _ in range(3):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert (p - q).abs().max() < 1e-6
    assert (a.weight - before).abs().max() > 1e-3


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on CPU needs a C++ compiler",
)
def test_compiled_flow_computes_the_same_density_and_inverse() -> None:
    torch.manual_seed(0)
    flow = randomize(RealNVP(2, num_layers=4, hidden_features=16), std=0.3).float()
    eager = RealNVP(2, num_layers=4, hidden_features=16)
    x = torch.randn(256, 2)
    # training with compile=True compiles the flow and moves its weights
    before = [p.detach().clone() for p in flow.parameters()]
    fit(flow, x, config=TrainConfig(steps=5, batch_size=64, eval_every=5, compile=True))
    assert any((p - b).abs().max() > 0 for p, b in zip(flow.parameters(), before, strict=True))
    eager.load_state_dict(flow.state_dict())
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(x), eager.log_prob(x), atol=1e-5, rtol=1e-5)
        z = eager.encode(x)
        assert (flow.decode(z) - x).abs().max() < 1e-5
        assert (flow.decode(z) - eager.decode(z)).abs().max() < 1e-5


def test_bf16_autocast_training_learns_and_keeps_float32_weights() -> None:
    torch.manual_seed(0)
    flow = RealNVP(2, num_layers=4, hidden_features=32)
    x = torch.randn(1024, 2) * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -1.0])
    before = -flow.log_prob(x).mean().item()
    config = TrainConfig(steps=150, batch_size=128, eval_every=50, bf16=True)
    fit(flow, x, config=config)
    with torch.no_grad():
        after = -flow.log_prob(x).mean().item()
    assert after < before - 0.3, (before, after)
    assert all(p.dtype == torch.float32 for p in flow.parameters())
