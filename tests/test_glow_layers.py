"""Glow's layers as options of the image model: ActNorm's data-dependent initialisation (and that
a checkpoint keeps it), the invertible 1x1 convolution's LU form, and both in the model, the
trainer and the command line. The exactness contract of both layers is in test_bijections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import fails, full_and_resumed
from realnvp.bijections import ActNorm, InvertibleConv1x1
from realnvp.cli import main
from realnvp.data.images import digits
from realnvp.errors import ConfigError
from realnvp.models import MultiScaleRealNVP, dequantize
from realnvp.training import TrainConfig
from realnvp.training.checkpoint import load_model, save_model
from test_bijections import jacobian_log_det

GLOW = {"actnorm": True, "conv1x1": True, "batch_norm": False}


def images(n: int, seed: int) -> torch.Tensor:
    """Images with per-channel offsets and spreads far from zero and one."""
    g = torch.Generator().manual_seed(seed)
    loc = torch.tensor([3.0, -2.0, 0.5])[None, :, None, None]
    scale = torch.tensor([0.2, 4.0, 1.5])[None, :, None, None]
    return loc + scale * torch.randn(n, 3, 4, 5, generator=g, dtype=torch.float64)


def test_actnorm_first_training_batch_sets_zero_mean_unit_variance() -> None:
    an = ActNorm(3).double()
    x = images(32, 0)
    z, log_det = an(x)
    assert bool(an.initialized)
    dims = [0, 2, 3]
    assert z.mean(dims).abs().max() < 1e-12
    var = x.var(dims, unbiased=False)
    assert torch.allclose(z.var(dims, unbiased=False), var / (var + an.eps), rtol=1e-12)  # ~1
    # the log-det is the standardization's: -(pixels) * sum(log std), std with eps
    std = (var + an.eps).sqrt()
    assert torch.allclose(log_det, (-20 * std.log().sum()).expand(32), rtol=1e-12)


def test_actnorm_initialises_once_and_not_in_evaluation_mode() -> None:
    an = ActNorm(3).double().eval()
    x = images(16, 0)
    z, log_det = an(x)  # evaluation mode: the identity, not initialised
    assert torch.equal(z, x) and not bool(an.initialized) and log_det.abs().max() == 0
    an.train()
    an(x)
    loc, log_scale = an.loc.detach().clone(), an.log_scale.detach().clone()
    an(images(16, 1) * 7 + 3)  # a later batch trains through the parameters, never resets them
    assert torch.equal(an.loc, loc) and torch.equal(an.log_scale, log_scale)


def test_actnorm_refuses_to_initialise_from_one_value_per_feature() -> None:
    with pytest.raises(ConfigError, match="more than one value per feature"):
        ActNorm(2)(torch.randn(1, 2))


def test_actnorm_initialisation_survives_a_checkpoint(tmp_path: Path) -> None:
    """normflows once lost it on load: the reloaded model re-initialised from its next batch.
    Here ``initialized`` is saved with the weights, so the reloaded model keeps them."""
    flow = MultiScaleRealNVP((1, 8, 8), 17, hidden_channels=4, num_blocks=1, **GLOW)
    x = dequantize(torch.randint(0, 17, (32, 1, 8, 8), generator=torch.Generator().manual_seed(0)))
    flow.train()
    flow.log_prob(x)  # initialises every actnorm from this batch
    save_model(tmp_path, flow, {})
    loaded, _ = load_model(tmp_path)
    loaded.train()
    loaded.log_prob(dequantize(torch.randint(0, 5, (32, 1, 8, 8))))  # another batch, darker
    actnorms = dict(flow.named_modules())
    saved = flow.state_dict()
    checked = 0
    for name, value in loaded.state_dict().items():
        if isinstance(actnorms[name.rsplit(".", 1)[0]], ActNorm):
            assert torch.equal(value, saved[name]), name
            checked += 1
    assert checked == 3 * 10  # loc, log_scale and initialized of each coupling's actnorm


def test_conv1x1_starts_as_a_rotation_and_inverts_by_its_factors() -> None:
    torch.manual_seed(0)
    conv = InvertibleConv1x1(5).double()
    w = conv.weight()
    # the factors of a float64 rotation, stored as float32 parameters: a rotation to float32
    assert torch.allclose(w @ w.T, torch.eye(5, dtype=torch.float64), atol=1e-6)
    assert abs(float(conv.log_s.detach().sum())) < 1e-6  # |det| of a rotation is 1
    with torch.no_grad():  # any invertible W: its inverse from the two triangular solves
        conv.log_s.add_(torch.linspace(-1, 1, 5, dtype=torch.float64))
        conv.upper.add_(0.3)
    w = conv.weight()
    assert torch.allclose(conv.inverse_weight() @ w, torch.eye(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(torch.linalg.slogdet(w).logabsdet, conv.log_s.sum(), atol=1e-12)


def test_conv1x1_refuses_one_channel() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        InvertibleConv1x1(1)


def test_model_places_the_layers_before_every_coupling() -> None:
    flow = MultiScaleRealNVP((1, 8, 8), 17, hidden_channels=4, num_blocks=1, **GLOW)
    names = [type(m).__name__ for m in flow.modules()]
    couplings = names.count("AffineCoupling")
    assert names.count("ActNorm") == couplings and "BatchNorm" not in names
    # 2 scales: 3 checkerboard couplings on 1 channel get no 1x1 convolution, the other 7 do
    assert couplings == 10 and names.count("InvertibleConv1x1") == 7
    assert flow.config["actnorm"] is True and flow.config["conv1x1"] is True
    first_scale = [type(m).__name__ for m in flow.transform.layers[1].layers][:6]
    assert first_scale == ["ActNorm", "AffineCoupling"] * 3  # 1 channel: no 1x1 convolution
    squeezed = [type(m).__name__ for m in flow.transform.layers[1].layers][7:10]
    assert squeezed == ["ActNorm", "InvertibleConv1x1", "AffineCoupling"]
    plain = MultiScaleRealNVP((1, 8, 8), 17, hidden_channels=4, num_blocks=1)
    assert "actnorm" not in plain.config and "conv1x1" not in plain.config  # old runs read alike


def test_model_with_the_glow_options_is_exact() -> None:
    """The image model with actnorms initialised from a batch and 1x1 convolutions: round trip
    and log-det against the autograd Jacobian, in float64, as test_bijections checks each layer."""
    torch.manual_seed(0)
    flow = MultiScaleRealNVP((1, 4, 4), 4, num_scales=2, hidden_channels=4, num_blocks=1, **GLOW)
    flow = flow.double()
    g = torch.Generator().manual_seed(1)
    x = 4 * torch.rand(64, 1, 4, 4, generator=g, dtype=torch.float64)
    flow.train()
    flow.transform(x)  # initialises the actnorms
    with torch.no_grad():  # and trained-looking, non-identity 1x1 convolutions
        for m in flow.modules():
            if isinstance(m, InvertibleConv1x1):
                m.log_s.add_(0.2 * torch.randn(m.log_s.shape, generator=g, dtype=torch.float64))
    f = flow.transform.eval()
    z, log_det = f(x[:5])
    assert (f.inverse(z)[0] - x[:5]).abs().max() < 1e-10
    assert torch.allclose(log_det, jacobian_log_det(lambda v: f(v)[0], x[:5]), atol=1e-8, rtol=0)


@pytest.mark.slow
def test_glow_options_resume_exactly(tmp_path: Path) -> None:
    """The actnorms' initialised state and the 1x1 convolutions' factors resume bit for bit."""
    x = digits().train[:256]
    model = {"type": "multiscale", "levels": 17, "hidden_channels": 4, "num_blocks": 1, **GLOW}
    config = TrainConfig(steps=30, batch_size=32, eval_every=10, grad_clip=100.0)
    full, resumed = full_and_resumed(tmp_path, x, model, config, at=10)
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_cli_trains_the_glow_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    tiny = ["--scales", "2", "--channels", "4", "--blocks", "1", "--eval-every", "10"]
    switches = ["--actnorm", "--conv1x1", "--no-batch-norm"]
    args = ["train", "digits", "--out", str(out), "--steps", "20", *tiny, *switches]
    assert main([*args, "--no-progress"]) == 0
    model = json.loads((out / "model.json").read_text())["model"]
    assert model["actnorm"] is True and model["conv1x1"] is True and model["batch_norm"] is False
    flow, _ = load_model(out)
    assert any(isinstance(m, ActNorm) and bool(m.initialized) for m in flow.modules())
    capsys.readouterr()
    line = fails(["train", "moons", "--out", str(tmp_path / "t"), "--actnorm"], capsys)
    assert "--actnorm: not an option of RealNVP" in line
    line = fails([*args, "--resume", "--no-actnorm"], capsys)
    assert "was started with --actnorm, not --no-actnorm" in line


def test_actnorm_reads_a_loaded_state_again() -> None:
    """It reads ``initialized`` once and then trusts its own flag (no sync per step); a
    loaded state_dict makes it read the buffer again."""
    an = ActNorm(3).double()
    an(images(16, 0))
    an.load_state_dict(ActNorm(3).double().state_dict())  # a state never initialised
    x = images(16, 1) * 3
    an(x)
    assert torch.allclose(an.loc, x.mean([0, 2, 3]), rtol=1e-12)


def test_conv1x1_is_exact_under_bf16_autocast() -> None:
    """Rounding the data to bfloat16 would be another map than the one whose log-det counts."""
    torch.manual_seed(0)
    conv = InvertibleConv1x1(4)
    x = torch.randn(3, 4, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, _ = conv(x)
    assert z.dtype == torch.float32 and torch.equal(z, conv(x)[0])
