"""The speed paths keep the flow exact: bf16 conditioners and the fused optimizer."""

from __future__ import annotations

import copy
import shutil
from collections import Counter
from collections.abc import Callable

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import randomize
from realnvp import RealNVP
from realnvp.audit import jacobian_log_det
from realnvp.models import build_flow
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
    """Through a stack, the inverse of a layer sees kept values that differ from the forward's by
    the float32 rounding of inverting the layers after it (about 1e-7). The conditioner's first
    layer is float32, but its hidden units are rounded to bf16 for the next layer: a unit within
    ~1e-7 of a bf16 rounding midpoint rounds one way forward and the other way in the inverse,
    moving a conditioner output (|s|, |t| up to ~0.2 here) by about a bf16 step (2^-8 relative,
    up to ~1e-3), and that row's round trip by as much.

    Measured on this flow (AVX2 CPU), 100 draws of 4096 points: 0 to 4 rows per draw (mean 0.75)
    get a conditioner output that differs between forward and inverse; all other rows round trip
    to 1.2e-6 at most; the affected rows err by up to 9e-4, at most 1.15 bf16 steps of their
    largest conditioner output. Only 42% of draws have no such row, and which rows are hit
    depends on the float32 rounding of the first linear layer, which differs between CPU kernels.
    With this test's points, one row errs by 6.3e-4 here (in the inverse of the fourth layer a
    hidden unit is 0.3173828125, exactly a bf16 midpoint, which rounds to even, down; forward it
    is 0.3173828423 and rounds up; t moves by 2^-11), and none does when that first layer is
    computed in float64 and rounded once: so a bound of 1e-5 on every row can pass on one CPU and
    fail on another. The rare rows and the float32-exact ones are therefore checked apart; a
    wrong sign of t or s in any one layer's inverse fails the test."""
    _, fast = bf16_pair(std=0.1)
    layers = list(fast.transform.layers)
    x = torch.randn(4096, 3)
    with torch.no_grad():
        forward = fast.transform.trajectory(x)  # [x, f1(x), f2(f1(x)), ..., z]
        z = forward[-1]
        assert z.abs().max() < 10
        # invert layer by layer, marking rows whose conditioner output differs from the forward's
        x_back, crossed = z, torch.zeros(len(x), dtype=torch.bool)
        largest_output = torch.zeros(len(x))
        for k in reversed(range(len(layers))):
            layer = layers[k]
            seen = layer.conditioner(forward[k][:, layer.mask])
            crossed |= (layer.conditioner(x_back[:, layer.mask]) != seen).any(1)
            largest_output = torch.maximum(largest_output, seen.abs().max(1).values)
            x_back = layer.inverse(x_back)[0]
        assert torch.equal(x_back, fast.decode(z))
    error = (x_back - x).abs().max(1).values
    # a bf16 rounding boundary is crossed in a tiny fraction of rows (measured: at most 4 of 4096)
    assert crossed.sum() <= len(x) // 500, crossed.sum()
    # every other row inverts to float32 precision (measured: 1.2e-6 at most)
    assert error[~crossed].max() < 1e-5
    # and the others by a few bf16 steps of their conditioner outputs (measured: 1.15 at most;
    # 4 leaves room for two crossings in one row and the exp(-s) of the layers inverted later)
    bf16_step = 2.0**-8 * largest_output[crossed]
    assert (error[crossed] <= 4 * bf16_step).all(), (error[crossed], bf16_step)


def test_bf16_option_survives_the_checkpoint_config() -> None:
    _, fast = bf16_pair(std=0.3)
    assert fast.config["conditioner_dtype"] == "bfloat16"
    rebuilt = build_flow(fast.spec)
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


class MatmulDtypes(TorchDispatchMode):
    """Counts the input dtypes of every matrix multiply that reaches the kernels (after autocast
    has cast the inputs), forward and backward."""

    OPS = (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm, torch.ops.aten.linear)

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: Counter[torch.dtype] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in self.OPS:
            self.dtypes.update(a.dtype for a in args if isinstance(a, torch.Tensor))
        return func(*args, **(kwargs or {}))


def matmul_dtypes(train: Callable[[], object]) -> Counter[torch.dtype]:
    with MatmulDtypes() as seen:
        train()
    return seen.dtypes


def test_bf16_autocast_training_learns_and_keeps_float32_weights() -> None:
    """Fails if ``TrainConfig.bf16`` were ignored (the autocast in the loop never enabled): the
    training matrix multiplies would then run in float32."""
    torch.manual_seed(0)
    flow = RealNVP(2, num_layers=4, hidden_features=32)
    x = torch.randn(1024, 2) * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -1.0])
    before = -flow.log_prob(x).mean().item()
    config = TrainConfig(steps=150, batch_size=128, eval_every=50, bf16=True)
    dtypes = matmul_dtypes(lambda: fit(flow, x, config=config))
    # every matrix multiply of training (no validation set, so no float32 evaluation) ran in bf16
    assert set(dtypes) == {torch.bfloat16}, dtypes
    with torch.no_grad():
        after = -flow.log_prob(x).mean().item()
    assert after < before - 0.3, (before, after)
    assert all(p.dtype == torch.float32 for p in flow.parameters())


def test_float32_training_runs_no_bf16_matmuls() -> None:
    """Fails if autocast were left on without ``bf16`` (e.g. ``enabled=True`` in the loop)."""
    flow = RealNVP(2, num_layers=4, hidden_features=32)
    config = TrainConfig(steps=3, batch_size=128, eval_every=50)
    dtypes = matmul_dtypes(lambda: fit(flow, torch.randn(1024, 2), config=config))
    assert set(dtypes) == {torch.float32}, dtypes


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on CPU needs a C++ compiler",
)
@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_compiled_flow_trains_on_the_right_gradients(coupling: str) -> None:
    """``flow.compile()`` is the training path's fast option, so its gradients must be the
    eager ones: each parameter's gradient within 1e-3 (relative, in norm) of float64's. Here
    eager float32 is within 5e-6 and compiled within 3e-6. Fails on a formulation that
    torch.compile differentiates wrongly, as it does zuko's NSF on this torch: its compiled
    log_prob agrees with the eager one to 4e-5 while every layer's gradient is 10-35% off
    (``benchmarks/vectors.py``; README, Performance)."""
    torch.manual_seed(0)
    flow = randomize(RealNVP(2, num_layers=3, hidden_features=16, coupling=coupling), std=0.3)
    exact = copy.deepcopy(flow).double()
    x = torch.randn(256, 2) * 1.5
    want = torch.autograd.grad(exact.log_prob(x.double()).mean(), list(exact.parameters()))
    flow.float().compile()
    got = torch.autograd.grad(flow.log_prob(x).mean(), list(flow.parameters()))
    for (name, _), g, w in zip(flow.named_parameters(), got, want, strict=True):
        error = ((g.double() - w).norm() / w.norm()).item()
        assert error < 1e-3, f"{name}: gradient off by {error:.1e} (relative)"
