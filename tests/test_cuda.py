"""The models on a CUDA device compute what they compute on the CPU. These run only where torch
sees a GPU (a session with the GPU machine runs them through ``benchmarks/gpu_session.sh``); on
a CPU-only machine they skip, and the same models' exactness is checked on the CPU elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import randomize
from realnvp.bijections import InvertibleConv1x1
from realnvp.cli import main
from realnvp.models import MultiScaleRealNVP, RealNVP, dequantize

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

IMAGE_MODELS = {
    "plain": {},
    "glow": {"actnorm": True, "conv1x1": True, "batch_norm": False},
    "conditional": {"num_classes": 3},
    "packed conditional": {"num_classes": 3, "packed": True},
}


def image_model(options: dict) -> MultiScaleRealNVP:
    torch.manual_seed(0)
    flow = MultiScaleRealNVP((1, 8, 8), 17, hidden_channels=8, num_blocks=2, **options)
    flow = flow.double()
    if options.get("actnorm"):  # initialised from a batch, as training's first step does
        flow.train()
        flow.transform(dequantize(torch.randint(0, 17, (32, 1, 8, 8))).double())
    return randomize(flow, std=0.05).eval()


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_model_on_cuda_gives_the_cpu_densities_and_inverts(name: str) -> None:
    """In float64 the GPU's log-densities are the CPU's and decode(encode(x)) is x: fails if a
    buffer or mask stays on the CPU, a kernel computes another function, or a label is placed
    wrongly (each off by far more than 1e-7 nats; an H200 differed from the CPU by at most
    7e-9 nats of ~190, the float64 kernels' rounding carried through 12 couplings)."""
    flow = image_model(IMAGE_MODELS[name])
    x = dequantize(torch.randint(0, 17, (16, 1, 8, 8))).double()
    labels = torch.arange(16) % 3 if "num_classes" in IMAGE_MODELS[name] else None
    with torch.no_grad():
        on_cpu = flow.log_prob(x, labels)
        flow.to("cuda")
        x_gpu = x.cuda()
        labels_gpu = None if labels is None else labels.cuda()
        on_gpu = flow.log_prob(x_gpu, labels_gpu)
        z = flow.encode(x_gpu, labels_gpu)
        back = flow.decode(z, labels_gpu)
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-7)
    assert (back - x_gpu).abs().max().item() < 1e-9


def test_conv1x1_on_cuda_is_the_float32_map_whose_log_det_counts() -> None:
    """With CUDA's default flags a 1x1 ``conv2d`` runs in TF32 (10-bit mantissa), so the map
    applied was not ``W`` and the inverse did not undo it: the Glow model's float32 round trip
    was 0.6 off on an H200 before the layer became a matrix product."""
    torch.manual_seed(0)
    conv = InvertibleConv1x1(48)
    with torch.no_grad():
        conv.lower.add_(0.2 * torch.randn(conv.lower.shape))
    x = torch.randn(64, 48, 16, 16)
    exact = torch.einsum("ij,bjhw->bihw", conv.weight().double(), x.double())
    conv.cuda()
    with torch.no_grad():
        z, _ = conv(x.cuda())
        back, _ = conv.inverse(z)
    scale = exact.abs().max().item()
    assert (z.cpu().double() - exact).abs().max().item() < 1e-5 * scale
    assert (back.cpu() - x).abs().max().item() < 1e-4


def test_table_flow_on_cuda_gives_the_cpu_densities_and_samples_there() -> None:
    torch.manual_seed(0)
    flow = randomize(RealNVP(3, num_layers=4, hidden_features=16, context_features=2).double())
    x, c = torch.randn(32, 3, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    with torch.no_grad():
        on_cpu = flow.log_prob(x, c)
        flow.cuda()
        on_gpu = flow.log_prob(x.cuda(), c.cuda())
        samples = flow.sample(5, c[0].cuda())
    assert torch.allclose(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-10)
    assert samples.shape == (5, 3) and samples.device.type == "cuda"


def test_bf16_training_on_cuda_learns_and_the_model_stays_exact() -> None:
    """Under bf16 autocast (``--bf16``) the conditioners run in bf16 but the loss is float32 and
    falls; the trained model, scored and inverted in float32 as evaluation and sampling do, is
    exact, and its bf16 log-densities are its float32 ones to bf16's precision."""
    torch.manual_seed(0)
    flow = MultiScaleRealNVP((1, 8, 8), 17, hidden_channels=16, num_blocks=2).cuda()
    data = torch.randint(0, 17, (64, 1, 8, 8), device="cuda")
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", torch.bfloat16):
            loss = -flow.log_prob(dequantize(data)).mean()
        assert loss.dtype == torch.float32
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 10
    flow.eval()
    x = dequantize(data)
    # float32 arithmetic: cuDNN runs float32 convolutions in TF32 unless told not to (PyTorch's
    # default), and the conditioners' TF32 rounding amplifies a round trip's float32 round-off
    # (4.6e-4 here with it, 3.3e-6 without: benchmarks/results/gpu_tf32.txt)
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        back = flow.decode(flow.encode(x))
        exact = flow.log_prob(x)
        with torch.autocast("cuda", torch.bfloat16):
            rounded = flow.log_prob(x)
    assert (back - x).abs().max().item() < 1e-4
    assert (rounded - exact).abs().max().item() < 2e-3 * exact.abs().max().item()


def test_cli_trains_on_cuda_and_the_run_serves_on_the_cpu(tmp_path: Path, capsys) -> None:
    """The class-conditional digits model trained with ``--device cuda``; its run folder is
    evaluated and sampled by the CPU commands (a GPU-saved tensor would fail to load there)."""
    out = tmp_path / "run"
    tiny = ["--channels", "8", "--blocks", "1", "--eval-every", "20", "--no-progress"]
    args = ["train", "digits", "--conditional", "--out", str(out), "--steps", "40", *tiny]
    assert main([*args, "--device", "cuda"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "digits", "--json"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["bits_per_dim"])
    samples = tmp_path / "threes.npy"
    assert main(["sample", str(out), "--label", "3", "-n", "8", "-o", str(samples)]) == 0
    drawn = np.load(samples)
    assert drawn.shape[0] == 8 and np.isfinite(drawn).all()
