"""Training throughput of the CIFAR-10-shaped multi-scale model on a GPU: images per second,
eager and under ``torch.compile``, in float32 and with bf16 autocast (the conditioners in bf16,
as ``--bf16`` trains), on random 8-bit images (throughput does not depend on the pixels).

Each setting: a fresh ``MultiScaleRealNVP((3, 32, 32), 256, num_scales=2, ...)`` (the paper's
CIFAR-10 model: 8 residual blocks of 64 feature maps, downscaled only once; 13.2M parameters; the
library's default for 32x32 is 4 scales, whose widths double to 512: 228.6M), Adam, batches of
``--batch-size``, ``--warmup`` steps untimed (compilation happens there), then ``--steps``
timed steps with the device synchronized before and after. One JSON line per setting.

For a session with the GPU machine (the whole run takes a few minutes on one H200):
    python benchmarks/gpu_images.py --out benchmarks/results/gpu_images.jsonl
The first run (benchmarks/results/gpu_images.jsonl, 2026-11-29, before ``--scales`` existed)
measured the 4-scale model of 228.6M parameters; its compiled settings did not finish compiling
within the 7 minutes left of its call. The second (2026-11-30, its last five lines) measured the
2-scale model, eager at batches of 64 and 256, and compiled in bf16 at 64. On a CPU it runs too
(``--device cpu --steps 2 --warmup 1 --channels 8 --blocks 1`` as a smoke test), but the
figures are the GPU's to report.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch
from records import log, versions

from realnvp.models import MultiScaleRealNVP, dequantize

SETTINGS = {
    "eager fp32": (False, False),
    "eager bf16": (False, True),
    "compile fp32": (True, False),
    "compile bf16": (True, True),
}


def images_per_second(args: argparse.Namespace, compiled: bool, bf16: bool) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MultiScaleRealNVP((3, 32, 32), 256, args.scales, args.channels, args.blocks)
    model = model.to(device)
    if compiled:
        model.compile()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = torch.randint(0, 256, (args.batch_size * 8, 3, 32, 32), device=device)
    model.train()

    def step(i: int) -> None:
        x = dequantize(data[(i % 8) * args.batch_size : (i % 8 + 1) * args.batch_size])
        autocast = torch.autocast(device.type, torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = -model.log_prob(x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    for i in range(args.warmup):
        step(i)
    sync(device)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    sync(device)
    seconds = time.perf_counter() - start
    return {
        "images_per_second": round(args.steps * args.batch_size / seconds, 1),
        "steps_per_second": round(args.steps / seconds, 2),
        "warmup_seconds": round(warmup, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_memory_gib": (
            round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None
        ),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64, help="the paper's CIFAR-10 width")
    parser.add_argument("--blocks", type=int, default=8, help="the paper's CIFAR-10 depth")
    parser.add_argument("--scales", type=int, default=2, help="the paper's CIFAR-10 scales")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    for name in args.settings:
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        result = images_per_second(args, *SETTINGS[name])
        record = {
            "setting": name,
            **result,
            "batch_size": args.batch_size,
            "channels": args.channels,
            "blocks": args.blocks,
            "scales": args.scales,
            "device": args.device,
            "gpu": gpu,
            "versions": versions(),
        }
        print(f"{name}: {result['images_per_second']} images/s", flush=True)
        log(args.out, record)


if __name__ == "__main__":
    main()
