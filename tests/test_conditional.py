"""Conditional flows p(x | c): exact for each context, the torch.distributions shapes, the
context's standardization and embedding, and training on (x, c) pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from helpers import randomize
from realnvp import MultiScaleRealNVP, RealNVP
from realnvp.bijections import ContextAffine
from realnvp.config import TrainConfig
from realnvp.distributions import ConditionalNormal
from realnvp.errors import ConfigError
from realnvp.models import build_flow, dequantize
from realnvp.nn import MLP
from realnvp.training import fit
from realnvp.training.runs import fit_data
from test_bijections import jacobian_log_det


def table_flow(context_net: nn.Module | None = None) -> RealNVP:
    torch.manual_seed(0)
    flow = RealNVP(3, num_layers=4, hidden_features=16, context_features=2, context_net=context_net)
    return randomize(flow.double())


def image_flow() -> MultiScaleRealNVP:
    torch.manual_seed(0)
    flow = MultiScaleRealNVP((1, 4, 4), 5, num_scales=2, hidden_channels=4, num_blocks=1)
    conditional = MultiScaleRealNVP(
        (1, 4, 4), 5, num_scales=2, hidden_channels=4, num_blocks=1, num_classes=3
    )
    assert sum(p.numel() for p in conditional.parameters()) > sum(
        p.numel() for p in flow.parameters()
    )
    return randomize(conditional.double(), std=0.1).eval()


def test_each_context_gives_an_exact_bijection() -> None:
    flow = table_flow()
    x = torch.randn(6, 3, dtype=torch.float64)
    for c in torch.randn(3, 2, dtype=torch.float64):
        h = flow.embed(c.expand(1, 2))
        z, log_det = flow.transform(x, h.expand(6, -1))
        auto = jacobian_log_det(lambda v, h=h: flow.transform(v, h.expand(len(v), -1))[0], x)
        assert torch.allclose(log_det, auto, atol=1e-10)
        assert (flow.decode(z, c) - x).abs().max() < 1e-10
        assert torch.allclose(flow.encode(x, c), z, atol=0)


def test_the_context_changes_the_density() -> None:
    flow = table_flow()
    x = torch.randn(8, 3, dtype=torch.float64)
    a = flow.log_prob(x, torch.tensor([0.0, 1.0], dtype=torch.float64))
    b = flow.log_prob(x, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert (a - b).abs().min() > 1e-3


def test_the_density_integrates_to_one_for_each_context() -> None:
    torch.manual_seed(0)
    flow = randomize(RealNVP(2, num_layers=4, hidden_features=16, context_features=1).double())
    grid = torch.linspace(-12, 12, 801, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.flatten(), yy.flatten()], 1)
    for c in (-1.0, 0.0, 2.0):
        with torch.no_grad():
            p = flow.log_prob(points, torch.tensor([c], dtype=torch.float64)).exp()
        mass = p.sum().item() * (grid[1] - grid[0]).item() ** 2
        assert mass == pytest.approx(1.0, abs=2e-3)


def test_samples_follow_torch_distributions_shapes_and_their_contexts() -> None:
    flow = table_flow()
    contexts = torch.randn(4, 2, dtype=torch.float64)
    assert flow.sample(5, contexts[0]).shape == (5, 3)
    x = flow.sample(5, contexts, generator=torch.Generator().manual_seed(1))
    assert x.shape == (5, 4, 3)
    # draw i of context b decodes latent row i * B + b with context b
    z = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z = z.reshape(5, 4, 3)
    for b in range(4):
        assert torch.allclose(x[:, b], flow.decode(z[:, b], contexts[b]), atol=1e-12)
    cold = flow.sample(5, contexts, temperature=0.5, generator=torch.Generator().manual_seed(1))
    for b in range(4):
        assert torch.allclose(cold[:, b], flow.decode(0.5 * z[:, b], contexts[b]), atol=1e-12)


def test_sample_and_log_prob_agrees_with_log_prob_per_context() -> None:
    flow = table_flow()
    contexts = torch.randn(3, 2, dtype=torch.float64)
    x, log_p = flow.sample_and_log_prob(7, contexts)
    assert x.shape == (7, 3, 3) and log_p.shape == (7, 3)
    again = flow.log_prob(x.reshape(21, 3), contexts.repeat(7, 1)).reshape(7, 3)
    assert torch.allclose(log_p, again, atol=1e-10)


def test_a_wrong_or_missing_context_is_refused_by_shape() -> None:
    flow, x = table_flow(), torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="this flow is conditional"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match=r"context of shape \(4, 5\) for 4 examples"):
        flow.log_prob(x, torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"context of shape \(3, 2\) for 4 examples"):
        flow.log_prob(x, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="not conditional"):
        RealNVP(3).log_prob(x.float(), torch.zeros(4, 2))


def test_an_unconditional_flow_still_reads_a_number_as_the_temperature() -> None:
    torch.manual_seed(0)
    flow = randomize(RealNVP(2, num_layers=2, hidden_features=8))
    with pytest.warns(FutureWarning, match="temperature="):
        old = flow.sample(5, 0.5, generator=torch.Generator().manual_seed(0))
    new = flow.sample(5, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(old, new)


def test_standardization_covers_the_context_in_float64() -> None:
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(200, 3)), rng.normal(size=(200, 2))
    far = c * 1e3 + 1e7  # float32 would round away the digits that tell rows apart
    torch.manual_seed(0)
    near_flow = RealNVP.for_data(x, context=c, num_layers=2, hidden_features=8)
    far_flow = RealNVP.for_data(x, context=far, num_layers=2, hidden_features=8)
    randomize(near_flow)
    state = {k: v for k, v in near_flow.state_dict().items() if "context_standardize" not in k}
    far_flow.load_state_dict(state, strict=False)
    rows = near_flow.as_input(x[:20])
    assert torch.allclose(
        near_flow.log_prob(rows, c[:20]), far_flow.log_prob(rows, far[:20]), atol=1e-5
    )
    assert far_flow.context_standardize.mean.dtype == torch.float64


def test_a_context_net_is_shared_and_trained() -> None:
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh())
    flow = table_flow(context_net=net)
    coupling = flow.couplings[0]
    assert coupling.conditioner[0].in_features == 2 + 8  # kept features + embedding
    flow.log_prob(torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2)).sum().backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0
    assert flow.config["context_net"] == "custom"
    with pytest.raises(ConfigError, match="context_net: a custom context_net is not saved"):
        build_flow(flow.spec)


def test_a_conditional_table_rebuilds_from_its_spec() -> None:
    flow = table_flow()
    again = build_flow(flow.spec).double()
    again.load_state_dict(flow.state_dict())
    x, c = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(again.log_prob(x, c), flow.log_prob(x, c))


def test_a_conditional_table_defaults_to_splines_after_a_context_affine() -> None:
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(500, 3)), rng.normal(size=(500, 2))
    flow = RealNVP.for_data(x, context=c)
    assert flow.config["coupling"] == "spline" and flow.config["context_affine"] is True
    assert isinstance(flow.transform.layers[1], ContextAffine)
    linear = [m for m in flow.transform.layers[1].modules() if isinstance(m, nn.Linear)]
    assert linear[0].in_features == 2 and linear[-1].out_features == 2 * 3  # c -> (s, t)
    plain = RealNVP.for_data(x)
    assert "context_affine" not in plain.config
    assert not any(isinstance(b, ContextAffine) for b in plain.transform.layers)
    # a spec saved before the option (no key) builds the flow it described: no such layer
    old = build_flow({k: v for k, v in flow.spec.items() if k != "context_affine"})
    assert not any(isinstance(b, ContextAffine) for b in old.transform.layers)


def test_a_context_affine_starts_as_the_identity_and_needs_a_context() -> None:
    layer = ContextAffine(3, lambda i, o: MLP(i, o, 8, 2), context_features=2)
    x, c = torch.randn(4, 3), torch.randn(4, 2)
    z, log_det = layer(x, c)
    assert torch.equal(z, x) and torch.equal(log_det, torch.zeros(4))
    with pytest.raises(ValueError, match=r"expects a context of shape \(4, 2\).*got no context"):
        layer(x)
    with pytest.raises(ValueError, match=r"got a context of shape \(4, 3\)"):
        layer(x, torch.randn(4, 3))
    with pytest.raises(ConfigError, match="context_affine: needs a context"):
        RealNVP(3, context_affine=True)


def test_the_conditional_base_is_a_diagonal_normal() -> None:
    base = randomize(ConditionalNormal((3,), context_features=2).double())
    z, h = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    mean, log_std = base.net(h).chunk(2, dim=1)
    expected = norm.logpdf(z.numpy(), mean.detach().numpy(), np.exp(log_std.detach().numpy()))
    assert np.allclose(base.log_prob(z, h).detach().numpy(), expected.sum(1), atol=1e-12)


def test_a_class_conditional_image_model_is_exact_for_each_label() -> None:
    flow = image_flow()
    x = dequantize(torch.randint(0, 5, (2, 1, 4, 4))).double()
    for label in range(3):
        labels = torch.full((2,), label)
        h = flow.embed(labels)
        z, log_det = flow.transform(x, h)
        auto = jacobian_log_det(lambda v, h=h: flow.transform(v, h[: len(v)])[0], x)
        assert torch.allclose(log_det, auto, atol=1e-8)
        assert (flow.decode(z, label) - x).abs().max() < 1e-8
    lp = [flow.log_prob(x, label) for label in range(3)]
    assert (lp[0] - lp[1]).abs().min() > 1e-3 and (lp[1] - lp[2]).abs().min() > 1e-3


def test_the_class_prior_moves_the_base_per_label() -> None:
    flow = image_flow()
    assert isinstance(flow.base, ConditionalNormal)
    x = flow.sample(3, torch.tensor([0, 2]), generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 2, 1, 4, 4)
    with pytest.raises(ValueError, match="a label of 3; the model has labels 0 to 2"):
        flow.sample(1, 3)
    plain = MultiScaleRealNVP((1, 4, 4), 5, num_scales=2, num_classes=3, class_prior=False)
    assert type(plain.base).__name__ == "StandardNormal"
    assert flow.context_mismatch(np.array([0, 1, 2.5])) == (
        "label 2.5 at row 3; the model has labels 0 to 2"
    )


def conditional_gaussian(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x1 | c ~ N(c, 0.1^2), x2 | c ~ N(0, e^{2c}): the context moves one coordinate and scales
    the other."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n, 1))
    x = np.concatenate([c + 0.1 * rng.normal(size=(n, 1)), np.exp(c) * rng.normal(size=(n, 1))], 1)
    return x, c


def exact_log_p(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """log p(x_i | c_i) of ``conditional_gaussian``, per row."""
    return norm.logpdf(x[:, 0], c[:, 0], 0.1) + norm.logpdf(x[:, 1], 0, np.exp(c[:, 0]))


def exact_nll(x: np.ndarray, c: np.ndarray) -> float:
    return float(-exact_log_p(x, c).mean())


def test_training_on_pairs_learns_the_conditional_density() -> None:
    x, c = conditional_gaussian(4000, seed=0)
    x_test, c_test = conditional_gaussian(2000, seed=1)
    config = TrainConfig(steps=600, eval_every=100, seed=0)
    model = {"num_layers": 4, "hidden_features": 32}
    flow, history = fit_data(
        x[:3600], x[3600:], model, config, seed=0, context_train=c[:3600], context_val=c[3600:]
    )
    nll = -flow.log_prob(flow.as_input(x_test), c_test).mean().item()
    gap = nll - exact_nll(x_test, c_test)
    # an unconditional fit cannot come within 0.5 nats: the context explains most of x
    unconditional = -norm.logpdf(x_test, x.mean(0), x.std(0)).sum(1).mean()
    assert unconditional - exact_nll(x_test, c_test) > 0.5
    assert 0 < gap < 0.05, gap
    assert history.best_val_nll < history.val_nll[0]


def test_fit_takes_pairs_and_refuses_unequal_lengths() -> None:
    flow = RealNVP(2, num_layers=2, hidden_features=8, context_features=1)
    x, c = torch.randn(64, 2), torch.randn(64, 1)
    history = fit(flow, (x, c), (x[:16], c[:16]), TrainConfig(steps=4, eval_every=2))
    assert history.step == [2, 4] and all(math.isfinite(v) for v in history.val_nll)
    with pytest.raises(ValueError, match="64 examples but 63 contexts"):
        fit(flow, (x, c[:63]), config=TrainConfig(steps=1))


class OldStyleShift(nn.Module):
    """A bijection written before contexts existed: forward(x) and inverse(z) only."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + 1.0, x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z - 1.0, z.new_zeros(z.shape[0])


def test_a_bijection_without_a_context_argument_still_works_unconditionally() -> None:
    from realnvp import Compose, Flow, StandardNormal

    flow = Flow(Compose([OldStyleShift(), OldStyleShift()]), StandardNormal(2))
    x = torch.zeros(3, 2)
    assert torch.allclose(flow.log_prob(x), StandardNormal(2).log_prob(x + 2.0))
    assert torch.equal(flow.decode(flow.encode(x)), x)
    assert flow.sample(4).shape == (4, 2)


def test_context_statistics_need_both_mean_and_std() -> None:
    """set_standardization with a context mean but no std: a TypeError naming the missing
    argument, not torch's 'must be real number, not NoneType' from deep inside."""
    flow = RealNVP(features=2, num_layers=2, context_features=1, standardize=True)
    with pytest.raises(TypeError, match="context_mean needs context_std"):
        flow.set_standardization(np.zeros(2), np.ones(2), context_mean=np.zeros(1))


def test_a_conditional_trainer_needs_the_validation_contexts() -> None:
    """make_trainer with context_train and validation rows but no context_val: a TypeError
    that names context_val."""
    from realnvp.training import make_trainer

    flow = RealNVP(features=2, num_layers=2, context_features=1)
    x, c = np.random.default_rng(0).normal(size=(20, 2)), np.zeros((20, 1))
    with pytest.raises(TypeError, match="context_val"):
        make_trainer(flow, x[:15], x[15:], context_train=c[:15])
