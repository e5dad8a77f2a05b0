"""The image model: squeeze, batch norm, logit, bits/dim, the multi-scale flow, and training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from realnvp.bijections import BatchNorm, Logit, Squeeze, channel_mask, checkerboard_mask
from realnvp.data.images import digits
from realnvp.models import Dequantizer, MultiScaleRealNVP, bits_per_dim, build_flow, dequantize
from realnvp.training import TrainConfig, Trainer, evaluate_nll


def test_bits_per_dim_worked_by_hand() -> None:
    # 2 pixels with joint density e^-3 (dequantized pixel units): 3 nats / (2 * ln 2) bits each.
    assert bits_per_dim(-3.0, 2) == pytest.approx(3 / (2 * 0.6931471805599453), rel=1e-12)
    # A density uniform over [0, 256)^D is 256^-D, exactly 8 bits per dimension.
    d = 784
    assert bits_per_dim(-d * math.log(256), d) == pytest.approx(8.0, rel=1e-12)


def test_logit_log_det_worked_by_hand() -> None:
    # At the middle grey level p = 1/2: dz/dx = (1 - 2 alpha) / levels / (p (1 - p)) = 4 * 0.9/256
    f = Logit(levels=256, alpha=0.05)
    z, log_det = f(torch.tensor([[128.0]], dtype=torch.float64))
    assert z.item() == pytest.approx(0.0, abs=1e-12)
    assert log_det.item() == pytest.approx(math.log(4 * 0.9 / 256), rel=1e-12)


def test_squeeze_layout_and_channel_mask_is_not_a_checkerboard() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    z, _ = Squeeze()(x)
    assert z.shape == (1, 4, 2, 2)
    # channel 2i + j holds pixel (2h + i, 2w + j)
    assert z[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert z[0, 3].tolist() == [[5.0, 7.0], [13.0, 15.0]]
    # The pixels a channel mask keeps after a squeeze are not those of either checkerboard.
    kept = Squeeze().inverse(channel_mask(4, 2, 2).float()[None])[0][0].bool()
    for parity in (0, 1):
        assert not torch.equal(kept, checkerboard_mask(1, 4, 4, parity))


def test_batch_norm_training_mode_normalizes_and_tracks() -> None:
    bn = BatchNorm(3, momentum=0.5)
    x = torch.randn(256, 3, 5, 5, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0]).reshape(
        1, 3, 1, 1
    ) + torch.tensor([0.0, -1.0, 5.0]).reshape(1, 3, 1, 1)
    bn.double()
    z, log_det = bn(x)
    assert z.mean((0, 2, 3)).abs().max() < 1e-10
    assert (z.var((0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
    var = x.var((0, 2, 3), unbiased=False)
    assert torch.allclose(log_det, -0.5 * 25 * torch.log(var + bn.eps).sum().expand(256))
    # running averages moved halfway from (0, 1) to the batch moments
    assert torch.allclose(bn.running_mean, 0.5 * x.mean((0, 2, 3)))
    assert torch.allclose(bn.running_var, 0.5 + 0.5 * var)


def test_batch_norm_refuses_a_single_value_per_feature_in_training() -> None:
    with pytest.raises(ValueError, match="more than one value"):
        BatchNorm(2)(torch.randn(1, 2))


def test_multiscale_latent_has_the_input_shape_and_inverts() -> None:
    flow = MultiScaleRealNVP((1, 28, 28), levels=256, num_scales=3, hidden_channels=4, num_blocks=1)
    flow.eval()
    x = dequantize(torch.randint(0, 256, (3, 1, 28, 28)))
    z = flow.encode(x)
    assert z.shape == x.shape
    assert (flow.decode(z) - x).abs().max() < 1e-3
    samples = flow.sample(2)
    assert samples.shape == (2, 1, 28, 28)
    # a new model is the logit and batch norms around identity couplings: finite and sane
    assert torch.isfinite(flow.log_prob(x)).all()


@pytest.mark.parametrize(
    ("shape", "scales", "message"),
    [((1, 28, 28), 4, "divisible by 8"), ((1, 4, 4), 3, "1x1"), ((28, 28), 2, "channels")],
)
def test_multiscale_rejects_shapes_the_recursion_cannot_take(shape, scales, message) -> None:
    with pytest.raises(ValueError, match=message):
        MultiScaleRealNVP(shape, num_scales=scales)


def test_dequantizer_noise_depends_on_seed_and_step_only() -> None:
    x = torch.zeros(4, 1, 2, 2)
    a, b = Dequantizer(seed=1), Dequantizer(seed=2)
    assert torch.equal(a(x, 7), Dequantizer(seed=1)(x, 7))
    assert not torch.equal(a(x, 7), a(x, 8))
    assert not torch.equal(a(x, 7), b(x, 7))
    assert a(x, 7).min() >= 0 and a(x, 7).max() < 1


def test_config_rebuilds_the_model() -> None:
    flow = MultiScaleRealNVP((1, 8, 8), levels=17, num_scales=2, hidden_channels=4, num_blocks=1)
    other = build_flow(flow.spec)
    other.load_state_dict(flow.state_dict())
    x = dequantize(torch.randint(0, 17, (5, 1, 8, 8)))
    flow.eval(), other.eval()
    assert torch.equal(flow.log_prob(x), other.log_prob(x))


def test_regularization_is_the_sum_of_squared_scales() -> None:
    flow = MultiScaleRealNVP((1, 4, 4), levels=4, num_scales=1, hidden_channels=2, num_blocks=0)
    expected = sum(
        p.square().sum()
        for name, p in flow.named_parameters()
        if name.endswith("original0") or name.endswith(".scale")
    )
    assert flow.regularization().item() == pytest.approx(expected.item(), rel=1e-6)
    assert flow.regularization().item() > 0


def test_training_on_digits_lowers_bits_per_dim() -> None:
    torch.manual_seed(0)
    data = digits()
    x_train = torch.as_tensor(data.train[:512], dtype=torch.float32)
    x_val = dequantize(torch.as_tensor(data.test), torch.Generator().manual_seed(0))
    flow = MultiScaleRealNVP(data.shape, levels=17, num_scales=2, hidden_channels=8, num_blocks=1)
    before = bits_per_dim(-evaluate_nll(flow, x_val).mean().item(), flow.dims)
    config = TrainConfig(steps=60, batch_size=64, grad_clip=100.0, scale_l2=5e-5, eval_every=30)
    Trainer(flow, x_train, x_val, config).fit()  # each batch dequantized by the flow
    after = bits_per_dim(-evaluate_nll(flow, x_val).mean().item(), flow.dims)
    # 17 grey levels: log2(17) = 4.09 bits/dim is the uniform model's cost
    assert after < before - 0.5, (before, after)
    assert after < np.log2(17)


@pytest.mark.parametrize("packed", [False, True])
def test_channels_last_convolutions_compute_what_nchw_does(packed: bool, monkeypatch) -> None:
    """The conditioners convolve in channels-last layout; the model must be the same function
    as in NCHW (a layout bug, e.g. a view that mixes channels, would change the densities)."""
    import realnvp.nn

    torch.manual_seed(0)
    flow = MultiScaleRealNVP((2, 8, 8), 16, 2, 4, 1, packed=packed).double()
    for p in flow.parameters():  # the conditioners start at zero output: make them act
        p.data.add_(0.05 * torch.randn_like(p))
    flow.eval()
    x = dequantize(torch.randint(0, 16, (3, 2, 8, 8))).double()
    monkeypatch.setattr(realnvp.nn, "CONV_MEMORY_FORMAT", torch.channels_last)
    last = flow.log_prob(x)
    monkeypatch.setattr(realnvp.nn, "CONV_MEMORY_FORMAT", torch.contiguous_format)
    first = flow.log_prob(x)
    assert torch.allclose(last, first, rtol=0, atol=1e-9)
    assert (last - flow.log_prob(x * 0.5 + 4)).abs().min() > 1e-3  # the input matters
