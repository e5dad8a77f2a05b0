"""realnvp against the compiled peers of ``vectors.py``, call by call: is ours at parity?

``vectors.py`` times each library for seconds at a time and takes medians over 3 to 5 repeats;
on this shared machine one repeat can run 20% faster than the next, so its ratios move by
about that much between runs. Here the libraries alternate at the finest grain that still
times real work: one training block of ``--block`` steps (batch 512), one log_prob call and
one sampling call at batch 65,536, library after library in each of ``--rounds`` rounds (the
order rotating every round, so none is always first), and each ratio is ours over the peer's
in the same round. The report gives the median of those paired ratios and their middle half
(25th to 75th percentile), which says how far the machine's noise reaches.

The models, data and optimizer are ``vectors.py``'s (fused Adam for all, float32,
``torch.compile`` of log_prob and sample for every library, one warm-up of each before timing).

    python benchmarks/parity.py --K 32 --out benchmarks/results/parity.jsonl
    python benchmarks/parity.py --K 8 --out benchmarks/results/parity.jsonl
    python benchmarks/parity.py --report benchmarks/results/parity.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from records import log, read, versions
from vectors import BIG, MODELS, batches, moons_data, train_steps

OURS = "realnvp-compile"
PEERS = (
    "plain-pytorch-compile",
    "zuko-compile",
    "nflows-compile",
    "normflows-compile",
    "FrEIA-compile",
)
MEASURES = ("train_steps_per_s", "log_prob_per_s", "sample_per_s")


def units(
    name: str, k: int, block: int, x_train: torch.Tensor, x_big: torch.Tensor
) -> dict[str, tuple[Callable[[], object], int]]:
    """The three timed units of library ``name`` on ``vectors.moons_data``'s training and big
    batches (each a call and the work it does), warmed up (compiled) once."""
    torch.manual_seed(0)
    model = MODELS[name](k)
    opt = model.optimizer()
    idx = batches(len(x_train), block)

    def sample() -> object:
        with torch.no_grad():
            return model.sample(BIG)

    def log_prob() -> object:
        with torch.no_grad():
            return model.log_prob(x_big)

    out = {
        "train_steps_per_s": (lambda: train_steps(model, opt, x_train, idx), block),
        "log_prob_per_s": (log_prob, BIG),
        "sample_per_s": (sample, BIG),
    }
    for fn, _ in out.values():
        fn()
    return out


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    libs = [OURS, *args.peers]
    head = {"kind": "meta", "K": args.K, "threads": args.threads, "libs": libs} | versions()
    run = time.strftime("%Y-%m-%d %H:%M:%S")
    log(args.out, head | {"run": run})
    x_train, _, x_big, _ = moons_data()
    timed = {name: units(name, args.K, args.block, x_train, x_big) for name in libs}
    for r in range(args.rounds):
        order = libs[r % len(libs) :] + libs[: r % len(libs)]
        record: dict = {"kind": "round", "K": args.K, "run": run, "round": r}
        for key in MEASURES:
            for name in order:
                fn, work = timed[name][key]
                start = time.perf_counter()
                fn()
                record.setdefault(name, {})[key] = work / (time.perf_counter() - start)
        log(args.out, record)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return q1, q2, q3


def report(paths: list[str]) -> str:
    """Per K, the newest run: each library's median rate and ours over it, paired by round."""
    rows = read(paths)
    newest = {r["K"]: r for r in rows if r["kind"] == "meta" and "run" in r}
    lines = []
    for k, meta in sorted(newest.items()):
        rounds = [r for r in rows if r["kind"] == "round" and r["run"] == meta["run"]]
        lines += [
            f"### K = {k}, {meta['threads']} threads, run of {meta['run']}: {len(rounds)} "
            "rounds; ours over the peer paired by round: median [25th, 75th percentile]",
            "",
            "| library | " + " | ".join(f"{m} | ours / it" for m in MEASURES) + " |",
            "|---|" + "---|---|" * len(MEASURES),
        ]
        for name in meta["libs"]:
            cells = []
            for m in MEASURES:
                rate = statistics.median(r[name][m] for r in rounds)
                q1, q2, q3 = quartiles([r[OURS][m] / r[name][m] for r in rounds])
                shown = f"{rate:,.0f}" if rate > 1000 else f"{rate:.1f}"
                cells += [shown, f"{q2:.2f} [{q1:.2f}, {q3:.2f}]"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=32)
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=20, help="training steps per timed block")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--report", nargs="+", metavar="JSONL")
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
    else:
        measure(args)


if __name__ == "__main__":
    main()
