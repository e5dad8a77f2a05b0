"""What ``flow.compile()`` costs up front: the first training step and the first log_prob and
sample calls at batch 65,536 of a compiled K-layer Real NVP. Run it with a fresh cache to see a
cold compilation:

    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python benchmarks/compile_time.py
"""

from __future__ import annotations

import json
import time

import torch
from vectors import BIG, OursCompiled, batches, moons_data, train_steps


def main() -> None:
    torch.set_num_threads(2)
    x_train, _, x_big, _ = moons_data()
    idx = batches(len(x_train), 3)
    for k in (8, 32):
        torch.manual_seed(0)
        start = time.perf_counter()
        model = OursCompiled(k)
        opt = model.optimizer()
        train_steps(model, opt, x_train, idx[:1])
        first_step = time.perf_counter() - start
        start = time.perf_counter()
        train_steps(model, opt, x_train, idx[1:3])
        next_steps = time.perf_counter() - start
        with torch.no_grad():
            start = time.perf_counter()
            model.log_prob(x_big)
            first_log_prob = time.perf_counter() - start
            start = time.perf_counter()
            model.sample(BIG)
            first_sample = time.perf_counter() - start
        record = {
            "kind": "cold_compile",
            "K": k,
            "first_train_step_s": first_step,
            "next_2_steps_s": next_steps,
            "first_log_prob_65536_s": first_log_prob,
            "first_sample_65536_s": first_sample,
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
