"""The image model's packed conditioners (``packed=True``): a checkerboard coupling run as a
channel split of ``squeeze(x)`` transforms exactly the pixels the paper's checkerboard does, a
channel split of images conditions on the kept channels alone, and the packed model trains,
conditions on labels and saves like the masked one. Exactness is in test_bijections."""

from __future__ import annotations

import pytest
import torch

from realnvp.bijections import (
    AffineCoupling,
    Squeeze,
    checkerboard_mask,
    packed_checkerboard_mask,
)
from realnvp.cli import main
from realnvp.models import MultiScaleRealNVP, dequantize
from realnvp.nn import ResNet
from realnvp.training.checkpoint import load_model


@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("channels", [1, 3])
def test_packed_mask_is_the_checkerboard_after_a_squeeze(channels: int, parity: int) -> None:
    board = checkerboard_mask(channels, 6, 4, parity).float()[None]
    squeezed, _ = Squeeze()(board)
    kept = packed_checkerboard_mask(channels, parity)
    assert torch.equal(squeezed[0].amax((1, 2)).bool(), kept)  # those channels: all kept pixels
    assert torch.equal(squeezed[0].amin((1, 2)).bool(), kept)  # the others: none


def test_packed_checkerboard_transforms_exactly_the_other_pixels() -> None:
    torch.manual_seed(0)
    flow = MultiScaleRealNVP(
        (1, 8, 8), 17, num_scales=2, hidden_channels=4, num_blocks=1, packed=True, batch_norm=False
    )
    first = flow.transform.layers[1].layers[0]  # Squeeze, coupling, unsqueeze
    coupling = first.layers[1]
    with torch.no_grad():  # a non-identity conditioner
        for p in coupling.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    x = torch.randn(5, 1, 8, 8)
    z, _ = first(x)
    kept = checkerboard_mask(1, 8, 8, parity=1)  # the first coupling's, as in the masked model
    assert torch.equal(z[:, kept], x[:, kept])
    assert (z[:, ~kept] - x[:, ~kept]).abs().min() > 0
    # and its conditioner sees the 2 kept channels of squeeze(x) alone, at a quarter of the pixels
    seen = []
    coupling.conditioner.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    first(x)
    assert seen == [torch.Size([5, 2, 4, 4])]
    assert isinstance(coupling, AffineCoupling) and isinstance(coupling.conditioner, ResNet)


def test_channel_split_of_images_conditions_on_the_kept_channels_alone() -> None:
    torch.manual_seed(0)
    layer = AffineCoupling(
        torch.tensor([True, True, False, False]), lambda i, o: ResNet(i, o, 4, 1)
    )
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    x = torch.randn(3, 4, 5, 5)
    z, log_det = layer.eval()(x)
    y = x.clone()
    y[:, 2:] += 1.0  # the transformed channels do not change the parameters: a shift passes
    z2, log_det2 = layer(y)
    assert torch.equal(z[:, :2], x[:, :2]) and torch.allclose(log_det, log_det2)
    assert torch.allclose(z2[:, 2:] - z[:, 2:], torch.exp(layer._scale_shift(x[:, :2], None)[0]))


def test_packed_class_conditional_model_scores_per_label() -> None:
    torch.manual_seed(0)
    # a standard normal base (no per-class prior): only the couplings can use the label
    flow = MultiScaleRealNVP(
        (1, 8, 8),
        17,
        hidden_channels=4,
        num_blocks=1,
        num_classes=3,
        packed=True,
        class_prior=False,
    )
    x = dequantize(torch.randint(0, 17, (4, 1, 8, 8)))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    seen = []
    packed = flow.transform.layers[1].layers[0].layers[1]  # the first, squeezed, coupling
    packed.conditioner.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    flow.eval()
    a, b = flow.log_prob(x, torch.tensor([0, 0, 0, 0])), flow.log_prob(x, torch.tensor([1] * 4))
    assert torch.isfinite(a).all() and (a - b).abs().max() > 1e-4
    assert seen[0] == 2 + 3  # the 2 kept channels of squeeze(x) and the label one-hot
    assert flow.sample(3, 2).shape == (3, 1, 8, 8)


def test_cli_trains_a_packed_model(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    tiny = ["--scales", "2", "--channels", "4", "--blocks", "1", "--eval-every", "10"]
    assert (
        main(
            [
                "train",
                "digits",
                "--out",
                str(out),
                "--steps",
                "10",
                *tiny,
                "--packed",
                "--no-progress",
            ]
        )
        == 0
    )
    flow, _ = load_model(out)
    assert flow.config["packed"] is True
    assert any(isinstance(m, Squeeze) for m in flow.transform.layers[1].layers[0].modules())
    assert main(["sample", str(out), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0
