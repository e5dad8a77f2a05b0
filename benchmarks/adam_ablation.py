"""How much of eager realnvp's training speed is the fused Adam step: the same K = 8 flow and
batches, trained with ``make_optimizer`` (fused Adam) and with torch's default Adam, interleaved.

    python benchmarks/adam_ablation.py --out benchmarks/results/adam_ablation.jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from vectors import Ours, batches, moons_data, train_steps

from realnvp.training.loop import make_optimizer


def main(reps: int = 5, out: Path | None = None) -> None:
    torch.set_num_threads(2)
    x_train, *_ = moons_data()
    idx = batches(len(x_train), 550)
    speeds: dict[str, list[float]] = {"fused Adam": [], "default Adam": []}
    for _ in range(reps):
        for kind, runs in speeds.items():
            torch.manual_seed(0)
            model = Ours(8)
            params = model.module.parameters()
            fused = kind == "fused Adam"
            opt = make_optimizer(params, 1e-3) if fused else torch.optim.Adam(params, lr=1e-3)
            train_steps(model, opt, x_train, idx[:50])
            start = time.perf_counter()
            train_steps(model, opt, x_train, idx[50:])
            runs.append(500 / (time.perf_counter() - start))
    for kind, runs in speeds.items():
        print(f"{kind}: {statistics.median(runs):.1f} steps/s (median of {reps})")
    record = {
        "bench": "adam_ablation",
        "K": 8,
        "batch": 512,
        **{
            f"{k.split()[0]}_steps_per_s": round(statistics.median(v), 1) for k, v in speeds.items()
        },
        "reps": reps,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    if out is not None:
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="fused against default Adam, eager realnvp")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, help="JSON lines file to append the medians to")
    args = parser.parse_args()
    main(args.reps, args.out)
