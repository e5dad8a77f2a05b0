"""Where a training step of the image models spends its time: the convolutions, the optimizer,
and the rest, for ours and normflows' at README's shapes (``images_vs_normflows.SHAPES``).

It answers one question: how fast could ours be at the same shape? Both libraries run one
ResNet per coupling, the same number of convolutions per step (normflows' ``ConvResidualNet``
starts and ends with 1x1 convolutions where ours, the paper's, has 3x3 ones), so if everything
but ours's convolutions took no time, ours would run at most ``normflows' step / ours's
convolution time`` times normflows' steps/s (``bound`` in the record). On 8x8 digits the
convolutions of both are of 4x4 and 2x2 images (8x4 and 4x2 for normflows' half-width
checkerboards).

Steps/s are from interleaved blocks of plain (unprofiled) steps, medians; the split of the time
is from ``torch.profiler`` over ``--profile-steps`` more steps: the convolution kernels' own CPU
time, forward and backward; the whole ``Optimizer.step``; and the rest of each step's wall time
(``record_function("step")``, Python between the operators included). Its shares are of the
profiled step, which the profiler slows. The steps draw their batches with replacement and keep
the learning rate constant; neither changes a step's work.

    python benchmarks/image_step_profile.py --data digits mnist5k \
        --out benchmarks/results/image_step_profile.jsonl
    python benchmarks/image_step_profile.py --report benchmarks/results/image_step_profile.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from images_vs_normflows import SHAPES, build_model, train_step
from records import log, versions
from torch.profiler import ProfilerActivity, profile, record_function

from realnvp.data.images import load_images
from realnvp.models import dequantize
from realnvp.training.loop import make_optimizer

#: the profiler's names for the convolution kernels, forward and backward
CONV_OPS = {
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward",
    "aten::_nnpack_spatial_convolution",
}


def step_of(lib: str, data_name: str, seed: int = 0) -> Callable[[], None]:
    """One training step of ``lib``'s model (``ours-packed``, ``ours-paper`` or ``normflows``),
    as the benchmark loop's: fused Adam, batch 64, fresh dequantization noise, clip 100."""
    data = load_images(data_name)
    channels, blocks = SHAPES[data_name]
    torch.manual_seed(seed)
    name, _, variant = lib.partition("-")
    model = build_model(name, variant, data, 2, channels, blocks, torch.channels_last)
    optimizer = make_optimizer(model.parameters(), 1e-3)
    x_train = torch.as_tensor(data.train, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)

    def step() -> None:
        x = dequantize(x_train[torch.randint(0, len(x_train), (64,), generator=g)], g)
        if lib == "normflows":  # ours converts inside each conditioner
            x = x.contiguous(memory_format=torch.channels_last)
        train_step(model, optimizer, x)

    return step


def split(step: Callable[[], None], steps: int) -> dict[str, float]:
    """Milliseconds per profiled step: convolutions, optimizer, rest, total."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function("step"):
                step()
    events = prof.key_averages()
    total = sum(e.cpu_time_total for e in events if e.key == "step")
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS)
    opt = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step"))
    ms = {"conv": conv, "optimizer": opt, "rest": total - conv - opt, "total": total}
    return {k: round(v / 1e3 / steps, 2) for k, v in ms.items()}


def measure(data_name: str, libs: list[str], rounds: int, per: int, profile_steps: int) -> dict:
    steps = {lib: step_of(lib, data_name) for lib in libs}
    for step in steps.values():  # warm-up
        for _ in range(3):
            step()
    rates: dict[str, list[float]] = {lib: [] for lib in libs}
    for _ in range(rounds):  # interleaved blocks, so a busy moment hits every library
        for lib, step in steps.items():
            start = time.perf_counter()
            for _ in range(per):
                step()
            rates[lib].append(per / (time.perf_counter() - start))
    result: dict = {}
    for lib, step in steps.items():
        result[lib] = {
            "steps_per_second": round(statistics.median(rates[lib]), 2),
            "profiled_ms": split(step, profile_steps),
        }
    nf = result["normflows"]
    for lib in libs:
        if lib != "normflows":
            result[lib]["vs_normflows"] = round(
                result[lib]["steps_per_second"] / nf["steps_per_second"], 2
            )
            # everything but ours's convolutions free: normflows' step over ours's convolutions
            result[lib]["bound"] = round(
                nf["profiled_ms"]["total"] / result[lib]["profiled_ms"]["conv"], 2
            )
    return {"data": data_name, "shape": SHAPES[data_name], "libs": result}


def report(path: Path) -> str:
    """README's table from the records in ``path``: per data set, each run's steps/s ratio to
    normflows, and under the profiler the convolutions' share of each step and ours's
    convolution and other time over normflows'."""
    lines = [
        "| data | run | lib | steps/s / normflows | convolutions' share "
        "| convolutions / normflows' | rest / normflows' |",
        "|---|---|---|---|---|---|---|",
    ]
    runs: dict[str, int] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        run = runs[r["data"]] = runs.get(r["data"], 0) + 1
        nf = r["libs"]["normflows"]["profiled_ms"]
        for lib, m in r["libs"].items():
            ms = m["profiled_ms"]
            ratios = [
                f"{m.get('vs_normflows', 1.0):.2f}",
                f"{ms['conv'] / ms['total']:.0%}",
                f"{ms['conv'] / nf['conv']:.2f}",
                f"{ms['rest'] / nf['rest']:.2f}",
            ]
            lines.append(f"| {r['data']} | {run} | {lib} | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(SHAPES))
    parser.add_argument("--libs", nargs="+", default=["normflows", "ours-packed", "ours-paper"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per", type=int, default=5, help="steps per timed block")
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--report", type=Path, metavar="JSONL", help="print the table of JSONL")
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
        return
    if "normflows" not in args.libs:
        parser.error("--libs needs normflows, the reference")
    torch.set_num_threads(args.threads)
    for name in args.data:
        record = measure(name, args.libs, args.rounds, args.per, args.profile_steps)
        log(args.out, {**record, "threads": args.threads, **versions("normflows")})


if __name__ == "__main__":
    main()
