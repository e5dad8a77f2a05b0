"""The contract every bijection keeps: shapes, exact inverses, exact log-determinants, gradients,
and state_dict round trips. Float64 throughout, random non-identity parameters."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from helpers import randomize
from realnvp import RealNVP
from realnvp.bijections import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    BatchNorm,
    Bijection,
    Compose,
    ContextAffine,
    FactorOut,
    Inverse,
    InvertibleConv1x1,
    Logit,
    Permutation,
    SplineCoupling,
    Squeeze,
    Standardize,
)
from realnvp.models import MultiScaleRealNVP
from realnvp.nn import MLP


def checkerboard(c: int, h: int, w: int) -> Tensor:
    ij = torch.arange(h)[:, None] + torch.arange(w)[None, :]
    return (ij % 2 == 1).expand(c, h, w).clone()


class ConvNet(nn.Sequential):
    """A tiny convolutional conditioner for event-shaped masks: (B, C, H, W) -> (B, k*C, H, W)."""

    def __init__(self, channels: int, k: int):
        super().__init__(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, k * channels, 3, padding=1),
        )


class FixedContext(Bijection):
    """A conditional layer at one fixed context row, so the contract checks it as it checks the
    others: each context value is a bijection of its own."""

    def __init__(self, layer: Bijection, context: Tensor):
        super().__init__()
        self.layer = layer
        self.register_buffer("context", context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.layer(x, self.context.expand(len(x), -1))

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.layer.inverse(z, self.context.expand(len(z), -1))


def spread(x: Tensor) -> Tensor:
    """Normal draws spread over the spline cases' bound of 1.5: about half of them land in the
    linear tails, the rest inside the splines."""
    return 2.5 * x


# name -> (builder, event shape[, map from normal draws into the domain]); a builder takes no
# argument (the autouse fixture seeds torch). Couplings get a conditioner or, as the models
# build them, a factory that the layer calls with its (in, out) sizes.
CASES: dict[str, tuple] = {
    "affine-D2": (lambda: AffineCoupling(torch.tensor([True, False]), MLP(1, 2, 16, 2)), (2,)),
    "affine-D5-keep-last": (
        lambda: AffineCoupling(torch.arange(5) >= 2, lambda i, o: MLP(i, o, 16, 2)),
        (5,),
    ),
    "affine-D5-user-mask": (
        lambda: AffineCoupling(
            torch.tensor([True, False, True, False, False]), lambda i, o: MLP(i, o, 16, 2)
        ),
        (5,),
    ),
    "affine-checkerboard": (
        lambda: AffineCoupling(checkerboard(2, 4, 4), ConvNet(2, 2)),
        (2, 4, 4),
    ),
    "affine-channel": (
        lambda: AffineCoupling(
            (torch.arange(4) < 2)[:, None, None].expand(4, 3, 3).clone(),
            lambda c_in, c_out: ConvNet(c_in, c_out // c_in),
        ),
        (4, 3, 3),
    ),
    "spline-D4": (
        lambda: SplineCoupling(
            torch.tensor([True, False, True, False]), lambda i, o: MLP(i, o, 16, 2), 5, 1.5
        ),
        (4,),
        spread,
    ),
    "spline-D3-context": (
        lambda: FixedContext(
            SplineCoupling(
                torch.tensor([True, False, False]),
                lambda i, o: MLP(i, o, 16, 2),
                bound=1.5,
                context_features=2,
            ),
            torch.tensor([[0.5, -1.0]]),
        ),
        (3,),
        spread,
    ),
    "context-affine-D3": (
        lambda: FixedContext(
            ContextAffine(3, lambda i, o: MLP(i, o, 16, 2), context_features=2),
            torch.tensor([[0.5, -1.0]]),
        ),
        (3,),
    ),
    "realnvp-context-affine-spline-transform": (
        lambda: FixedContext(
            RealNVP(
                3,
                num_layers=2,
                hidden_features=16,
                coupling="spline",
                tail_bound=1.5,
                context_features=2,
                context_affine=True,
            ).transform,
            torch.tensor([[-0.3, 0.8]]),
        ),
        (3,),
        spread,
    ),
    "realnvp-spline-transform": (
        lambda: (
            RealNVP(
                3, num_layers=3, hidden_features=16, coupling="spline", tail_bound=1.5
            ).transform
        ),
        (3,),
        spread,
    ),
    "additive-D3": (
        lambda: AdditiveCoupling(torch.tensor([True, True, False]), lambda i, o: MLP(i, o, 16, 2)),
        (3,),
    ),
    "additive-checkerboard": (
        lambda: AdditiveCoupling(checkerboard(1, 4, 4), ConvNet(1, 1)),
        (1, 4, 4),
    ),
    "permutation": (lambda: Permutation(torch.tensor([2, 0, 3, 1])), (4,)),
    "standardize": (
        lambda: Standardize(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 3.0, 1.5])),
        (3,),
    ),
    "inverse-affine": (
        lambda: Inverse(AffineCoupling(torch.tensor([False, True]), MLP(1, 2, 16, 2))),
        (2,),
    ),
    "compose": (
        lambda: Compose(
            [
                AffineCoupling(torch.tensor([True, False, False]), MLP(1, 4, 16, 2)),
                Permutation(torch.tensor([1, 2, 0])),
                AdditiveCoupling(torch.tensor([False, True, True]), MLP(2, 1, 16, 2)),
            ]
        ),
        (3,),
    ),
    "realnvp-transform": (
        lambda: RealNVP(3, num_layers=4, hidden_features=16, standardize=True).transform,
        (3,),
    ),
}


def batch_norm(features: int) -> BatchNorm:
    """A batch norm in evaluation mode with non-trivial running statistics."""
    bn = BatchNorm(features)
    g = torch.Generator().manual_seed(3)
    bn.running_mean.copy_(torch.randn(features, generator=g))
    bn.running_var.copy_(torch.rand(features, generator=g) * 3 + 0.2)
    return bn.eval()


def actnorm(features: int) -> ActNorm:
    """An actnorm past its initialisation (``randomize`` then gives it non-trivial values)."""
    an = ActNorm(features)
    an.initialized.fill_(True)
    return an


def tiny_multiscale(packed: bool = False) -> Bijection:
    """The whole image model on a 4x4 image: 2 scales, ResNet conditioners, batch norms;
    ``packed``: its conditioners see the kept pixels packed as channels."""
    flow = MultiScaleRealNVP(
        (1, 4, 4), levels=4, num_scales=2, hidden_channels=4, num_blocks=1, packed=packed
    )
    return flow.transform.eval()


def pixels(x: Tensor) -> Tensor:
    """Map normal draws into the pixel range (0, 4) of the image cases."""
    return 4 * torch.sigmoid(x)


CASES.update(
    {
        # squeeze changes the shape, so it is checked between a coupling and an unsqueeze
        "squeeze-coupling-unsqueeze": (
            lambda: Compose(
                [
                    Squeeze(),
                    AffineCoupling(
                        (torch.arange(8) < 4)[:, None, None].expand(8, 2, 3).clone(),
                        ConvNet(8, 2),
                    ),
                    Inverse(Squeeze()),
                ]
            ),
            (2, 4, 6),
        ),
        "factor-out": (
            lambda: FactorOut(AffineCoupling(checkerboard(2, 2, 2), ConvNet(2, 2))),
            (4, 2, 2),
        ),
        "batch-norm-vector-eval": (lambda: batch_norm(3), (3,)),
        "batch-norm-image-eval": (lambda: batch_norm(2), (2, 3, 3)),
        "logit": (lambda: Logit(levels=4, alpha=0.05), (2, 2, 2), pixels),
        "multiscale-model": (tiny_multiscale, (1, 4, 4), pixels),
        "multiscale-model-packed": (lambda: tiny_multiscale(packed=True), (1, 4, 4), pixels),
        # 6 -> 3: the second scale is odd, so its checkerboards stay masked
        "multiscale-model-packed-odd": (
            lambda: MultiScaleRealNVP(
                (1, 6, 6), 4, num_scales=2, hidden_channels=4, num_blocks=1, packed=True
            ).transform.eval(),
            (1, 6, 6),
            pixels,
        ),
        "affine-channel-split-of-images": (
            lambda: AffineCoupling(torch.tensor([True, False, False, True]), ConvNet(2, 2)),
            (4, 3, 2),
        ),
        "actnorm-vector": (lambda: actnorm(3), (3,)),
        "actnorm-image": (lambda: actnorm(2), (2, 3, 3)),
        "conv1x1-vector": (lambda: InvertibleConv1x1(4), (4,)),
        "conv1x1-image": (lambda: InvertibleConv1x1(3), (3, 2, 3)),
        "conv1x1-3d": (lambda: InvertibleConv1x1(2), (2, 3)),
    }
)


def build(name: str, seed: int = 0) -> tuple[Bijection, Tensor]:
    builder, shape, *domain = CASES[name]
    torch.manual_seed(seed)
    bijection = randomize(builder().double(), seed=seed)
    x = torch.randn(7, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return bijection, (domain[0](x) if domain else x)


def jacobian_log_det(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """log|det J| of fn at each batch element, from the dense autograd Jacobian."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v.unsqueeze(0)).squeeze(0), xi)
        out.append(torch.linalg.slogdet(jac.reshape(xi.numel(), xi.numel())).logabsdet)
    return torch.stack(out)


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[Bijection, Tensor]:
    return build(request.param)


def test_shapes(case: tuple[Bijection, Tensor]) -> None:
    f, x = case
    z, log_det = f(x)
    assert z.shape == x.shape and log_det.shape == (x.shape[0],)
    x2, log_det2 = f.inverse(z)
    assert x2.shape == x.shape and log_det2.shape == (x.shape[0],)


def test_case_is_not_the_identity(case: tuple[Bijection, Tensor]) -> None:
    f, x = case
    assert (f(x)[0] - x).abs().max() > 1e-3


def test_round_trip_forward_then_inverse(case: tuple[Bijection, Tensor]) -> None:
    f, x = case
    z, _ = f(x)
    assert (f.inverse(z)[0] - x).abs().max() < 1e-10


def test_round_trip_inverse_then_forward(case: tuple[Bijection, Tensor]) -> None:
    f, z = case
    x, _ = f.inverse(z)
    assert (f(x)[0] - z).abs().max() < 1e-10


def test_forward_log_det_matches_autograd(case: tuple[Bijection, Tensor]) -> None:
    f, x = case
    expected = jacobian_log_det(lambda v: f(v)[0], x)
    assert torch.allclose(f(x)[1], expected, atol=1e-8, rtol=0)


def test_inverse_log_det_matches_autograd(case: tuple[Bijection, Tensor]) -> None:
    f, z = case
    expected = jacobian_log_det(lambda v: f.inverse(v)[0], z)
    assert torch.allclose(f.inverse(z)[1], expected, atol=1e-8, rtol=0)


def test_log_dets_cancel(case: tuple[Bijection, Tensor]) -> None:
    f, x = case
    z, forward_log_det = f(x)
    _, inverse_log_det = f.inverse(z)
    assert (forward_log_det + inverse_log_det).abs().max() < 1e-10


def test_every_parameter_and_the_input_get_a_gradient(case: tuple[Bijection, Tensor]) -> None:
    f, x = case
    x = x.clone().requires_grad_(True)
    z, log_det = f(x)
    (z.square().sum() + log_det.sum()).backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    for name, p in f.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and bool(p.grad.abs().sum() > 0), name


def test_state_dict_round_trip(
    case: tuple[Bijection, Tensor], request: pytest.FixtureRequest
) -> None:
    f, x = case
    other, _ = build(request.node.callspec.params["case"], seed=123)
    other.load_state_dict(f.state_dict())
    for a, b in zip(f(x), other(x), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(f.inverse(x), other.inverse(x), strict=True):
        assert torch.equal(a, b)
