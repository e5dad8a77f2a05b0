"""How much of eager realnvp's training speed is the fused Adam step: the same K = 8 flow and
batches, trained with ``make_optimizer`` (fused Adam) and with torch's default Adam, interleaved.

    python benchmarks/adam_ablation.py
"""

from __future__ import annotations

import statistics
import time

import torch
from vectors import Ours, batches, moons_data, train_steps

from realnvp.training.loop import make_optimizer


def main(reps: int = 5) -> None:
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


if __name__ == "__main__":
    main()
