"""Ways to compile a training step of the vectors benchmark's Real NVP, and what the step's
matrix multiplies alone would allow.

The model and batches are ``vectors.py``'s (2-D, K affine couplings, 1-128-128-2 ReLU
conditioners, batch 512, Adam lr 1e-3). Each variant trains the same model from the same
initialisation on the same batches:

- ``compiled``: ``flow.compile()`` (log_prob compiled, its backward compiled with it by
  AOTAutograd), fused Adam: what ``vectors.py`` times as ``realnvp-compile``;
- ``compiled-adam``: the same with Adam's step compiled too (``torch.compile(opt.step)``, on
  the multi-tensor Adam, as PyTorch's tutorial on compiling the optimizer does);
- ``whole-step``: the forward, backward and Adam step as one ``torch.compile``d function, the
  backward traced by compiled autograd (``torch._dynamo.config`` ``compiled_autograd`` and
  ``trace_autograd_ops``), Adam the multi-tensor one (Dynamo fails to trace the fused one on
  torch 2.13: "Expected scalars to be on CPU, got meta"). Dynamo still splits it: ``--check``
  counts 5 graph breaks on torch 2.13 (the optimizer's own ``torch._dynamo.graph_break()``
  calls, a skipped function, ``autograd.grad`` consuming the returned tensor's grad_fn);
- ``max-autotune``: ``flow.compile(mode="max-autotune")``, Inductor choosing among its own
  matrix-multiply kernels, fused Adam.

Beside them, ``gemms``: the step's matrix multiplies alone, at their real shapes and nothing
else (per coupling the forward's three and the backward's five: the square layer's input and
weight gradients, the last layer's two, the first layer's weight gradient), which no step can
beat; and ``vectors.gemm_limit``'s square-only limit. Steps/s are medians of interleaved blocks
(``for rep: for variant:``), each after a warm-up that includes its compilation.

    python benchmarks/train_step.py --out benchmarks/results/train_step.jsonl  # and --threads 1
    python benchmarks/train_step.py --check --out benchmarks/results/train_step.jsonl
    python benchmarks/train_step.py --report benchmarks/results/train_step.jsonl
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from records import log, read, versions
from torch.nn import functional as F
from vectors import BATCH, HIDDEN, batches, gemm_limit, moons_data

from realnvp import RealNVP
from realnvp.training.loop import make_optimizer

VARIANTS = ("compiled", "compiled-adam", "whole-step", "max-autotune")


def step_of(variant: str, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """One training step ``x -> loss`` of a fresh K-coupling model (seed 0)."""
    torch.manual_seed(0)
    flow = RealNVP(2, num_layers=k, hidden_features=HIDDEN)
    if variant in ("compiled-adam", "whole-step"):  # Dynamo traces the multi-tensor Adam
        opt = torch.optim.Adam(flow.parameters(), lr=1e-3, foreach=True)
        update: Callable[[], object] = opt.step
        if variant == "compiled-adam":
            update = torch.compile(opt.step)
    else:
        opt = make_optimizer(flow.parameters(), lr=1e-3)
        update = opt.step
    if variant != "whole-step":
        flow.compile(**({"mode": "max-autotune"} if variant == "max-autotune" else {}))

    def step(x: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = -flow.log_prob(x).mean()
        loss.backward()
        update()
        return loss.detach()

    if variant == "whole-step":
        whole = torch.compile(step)

        def step(x: torch.Tensor) -> torch.Tensor:
            # for this function's calls only: turned on for good, compiled autograd made the
            # other variants' compiled Adam recompile, and fail, on torch 2.13; without
            # trace_autograd_ops Dynamo breaks the graph at .backward()
            with torch._dynamo.config.patch(compiled_autograd=True, trace_autograd_ops=True):
                return whole(x)

    return step


def gemms(k: int) -> Callable[[torch.Tensor], None]:
    """The matrix multiplies of one training step at batch 512 and nothing else: per coupling
    (B,1)@(1,128), (B,128)@(128,128), (B,128)@(128,2) forward, with their biases (``addmm``,
    as ``nn.Linear`` runs them), and the backward's (B,128)@(128,128) and (128,B)@(B,128) of the
    square layer, (B,2)@(2,128) and (2,B)@(B,128) of the last, (128,B)@(B,1) and (B,128)@(128,1)
    of the first (its input's gradient flows on to the coupling before)."""
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(HIDDEN, 1, generator=g)
    w = torch.randn(HIDDEN, HIDDEN, generator=g) / 11
    w2 = torch.randn(2, HIDDEN, generator=g) / 11
    b, b2 = torch.zeros(HIDDEN), torch.zeros(2)
    grad, grad2 = torch.randn(BATCH, HIDDEN, generator=g), torch.randn(BATCH, 2, generator=g)

    def run(x: torch.Tensor) -> None:
        a = x[:, :1]
        for _ in range(k):
            h1 = F.linear(a, w1, b)
            h2 = F.linear(h1, w, b)
            F.linear(h2, w2, b2)
            grad @ w, grad.T @ h1, grad2 @ w2, grad2.T @ h2, grad.T @ a, grad @ w1

    return run


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    x_train = moons_data()[0]
    idx = batches(len(x_train), args.warmup + args.steps)
    head = {"kind": "meta", "K": args.K, "threads": args.threads} | versions()
    log(args.out, head | {"time": time.strftime("%Y-%m-%d %H:%M")})
    key = {"K": args.K, "threads": args.threads, "run": time.strftime("%Y-%m-%d %H:%M:%S")}
    steps: dict[str, Callable[[torch.Tensor], object]] = {}
    for variant in args.variants:
        step = step_of(variant, args.K)
        start = time.perf_counter()
        for b in idx[: args.warmup]:
            step(x_train[b])
        warm = time.perf_counter() - start
        log(args.out, {"kind": "warmup", **key, "variant": variant, "seconds": warm})
        steps[variant] = step
    steps["gemms"] = gemms(args.K)
    for rep in range(args.reps):
        for variant, step in steps.items():
            start = time.perf_counter()
            for b in idx[args.warmup :]:
                step(x_train[b])
            rate = args.steps / (time.perf_counter() - start)
            log(
                args.out,
                {"kind": "step", **key, "rep": rep, "variant": variant, "steps_per_s": rate},
            )
        limit = gemm_limit(args.K, torch.float32)["train_steps_per_s"]
        log(args.out, {"kind": "limit", **key, "rep": rep, "train_steps_per_s": limit})


def losses_agree(k: int, steps: int = 20) -> dict[str, dict[str, float]]:
    """Each variant's loss after ``steps`` steps on the same batches, and the graph breaks
    Dynamo counted while it trained: the variants train the same model (to float32 round-off
    and the compilers' reordering), so one that is faster by doing something else shows here,
    and ``whole-step`` is one graph only if it has no break."""
    from torch._dynamo.utils import counters

    x_train = moons_data()[0]
    idx = batches(len(x_train), steps)
    out = {}
    for variant in VARIANTS:
        counters.clear()
        step = step_of(variant, k)
        losses = [step(x_train[b]).item() for b in idx]
        breaks = sum(counters["graph_break"].values())
        out[variant] = {"loss": losses[-1], "graph_breaks": breaks}
    return out


def paired(timed: list[dict], limits: dict[int, float], variant: str, base: str) -> float:
    """The median over the repeats of ``variant``'s steps/s over ``base``'s in the same repeat
    (``base`` "limit": over the repeat's ``gemm_limit``); NaN where either is missing."""
    by = {(r["variant"], r["rep"]): r["steps_per_s"] for r in timed}
    ratios = [
        value / (limits[rep] if base == "limit" else by[(base, rep)])
        for (v, rep), value in by.items()
        if v == variant and ((base, rep) in by or (base == "limit" and rep in limits))
    ]
    return statistics.median(ratios) if ratios else math.nan


def report(paths: list[str]) -> str:
    """Per (K, threads) the newest run's medians, each ratio paired within a repeat."""
    rows = read(paths)
    runs = [r for r in rows if r["kind"] in ("step", "limit", "warmup") and "run" in r]
    newest = {(r["K"], r["threads"]): r["run"] for r in runs}  # the file's last run of each
    lines = []
    for (k, threads), run in sorted(newest.items()):
        mine = [r for r in runs if (r["K"], r["threads"], r["run"]) == (k, threads, run)]
        timed = [r for r in mine if r["kind"] == "step"]
        limits = {r["rep"]: r["train_steps_per_s"] for r in mine if r["kind"] == "limit"}
        warm = {r["variant"]: r["seconds"] for r in mine if r["kind"] == "warmup"}
        lines += [
            f"### K = {k}, batch {BATCH}, {threads} thread(s), run of {run} (medians over "
            f"{len(limits)} interleaved repeats; each ratio within a repeat)",
            "",
            "| variant | train steps/s | / compiled | / the step's matrix multiplies "
            "| / the square-only limit | warm-up s |",
            "|---|---|---|---|---|---|",
        ]
        for v in dict.fromkeys(r["variant"] for r in timed):
            rate = statistics.median(r["steps_per_s"] for r in timed if r["variant"] == v)
            ratios = [paired(timed, limits, v, base) for base in ("compiled", "gemms", "limit")]
            cells = [f"{rate:.1f}"] + [f"{x:.2f}" for x in ratios]
            lines.append(f"| {v} | " + " | ".join(cells) + f" | {warm.get(v, math.nan):.1f} |")
        limit = statistics.median(limits.values())
        lines += [f"| square-only limit (`gemm_limit`) | {limit:.1f} | | | 1.00 | |", ""]
    for r in rows:
        if r["kind"] == "check":
            cells = [
                f"{v} {x['loss']:.7f} ({x['graph_breaks']} graph breaks)"
                for v, x in r["after_20_steps"].items()
            ]
            lines.append(f"`--check`, K = {r['K']}: the loss after 20 steps: {', '.join(cells)}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--report", nargs="+", metavar="JSONL")
    parser.add_argument("--check", action="store_true", help="each variant's loss after 20 steps")
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
    elif args.check:
        log(args.out, {"kind": "check", "K": args.K, "after_20_steps": losses_agree(args.K)})
    else:
        measure(args)


if __name__ == "__main__":
    main()
