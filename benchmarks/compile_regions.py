"""torch.compile of the image model, whole or by region: the first two training steps (where
compilation happens), steps/s after them, and the first and second ``sample(64)``.

``whole``: ``flow.compile()`` (``log_prob`` and the inverse pass compiled as whole graphs);
``regional``: each ResNet conditioner compiled as its own module (``module.compile()``), so the
couplings of one shape share one compiled graph and the compile time is bounded by the number
of distinct shapes, not the depth; ``eager``: nothing compiled. mnist5k's shape (1x28x28), 2
scales, 16 channels, 1 block, batch 64, random 8-bit images, Adam 1e-3.

    python benchmarks/compile_regions.py --modes eager regional whole \
        --out benchmarks/results/compile_regions.jsonl
(each mode in a fresh process, so one mode's compiled code is not another's cache; use a fresh
``TORCHINDUCTOR_CACHE_DIR`` for a cold compile)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
from records import log, versions

from realnvp.models import MultiScaleRealNVP, dequantize
from realnvp.nn import ResNet


def measure(mode: str, steps: int) -> dict:
    torch.manual_seed(0)
    flow = MultiScaleRealNVP((1, 28, 28), 256, 2, 16, 1)
    if mode == "whole":
        flow.compile()
    elif mode == "regional":
        for module in flow.modules():
            if isinstance(module, ResNet):
                module.compile()
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    data = torch.randint(0, 256, (64 * 8, 1, 28, 28))
    flow.train()

    def step(i: int) -> None:
        loss = -flow.log_prob(dequantize(data[(i % 8) * 64 : (i % 8 + 1) * 64])).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step(0)
    step(1)
    first = time.perf_counter() - start
    for i in range(3):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    rate = steps / (time.perf_counter() - start)
    samples = []
    for _ in range(2):
        start = time.perf_counter()
        with torch.no_grad():
            flow.sample(64)
        samples.append(time.perf_counter() - start)
    return {
        "mode": mode,
        "first_two_steps_s": round(first, 1),
        "steps_per_second": round(rate, 2),
        "first_sample_s": round(samples[0], 1),
        "second_sample_s": round(samples[1], 2),
        "steps": steps,
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["eager", "regional", "whole"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.one:
        log(args.out, measure(args.one, args.steps))
        return
    for mode in args.modes:  # each in a fresh process
        command = [sys.executable, __file__, "--one", mode, "--steps", str(args.steps)]
        subprocess.run([*command, *(["--out", str(args.out)] if args.out else [])], check=True)


if __name__ == "__main__":
    main()
