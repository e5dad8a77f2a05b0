"""The same Real NVP in realnvp and in its peers, timed on equal work in one process.

Every model: 2-D input, K affine couplings on alternating halves, one conditioner MLP per coupling
(1 -> 128 -> 128 -> 2, ReLU) yielding shift and log-scale, a standard normal base. Data:
two moons (noise 0.05), standardized with the training mean and std; the same batches for all.

Measured, with the libraries interleaved (``for rep: for lib:``) and medians reported:
- train: Adam (lr 1e-3) steps per second at batch 512 (``--train-steps`` timed after a warm-up);
- log_prob: points per second at batch 65,536 under ``no_grad``;
- sample: samples per second at batch 65,536 under ``no_grad``;
- bare: the same matrix multiplies with no flow around them (and with bias + ReLU), what the
  machine can do for this network;
- quality (``--quality``): test NLL after 5,000 steps (cosine decay to 0, the same batches), its gap
  to the exact limit of the two-moons law, and the training time until the test NLL (checked every
  100 steps, not timed) first comes within 0.02 nats of that limit.

Usage (peers from ``pip install -e .[bench]``; run nothing else at the same time):
    python benchmarks/vectors.py --K 8 --reps 7 --quality --out benchmarks/results/K8.jsonl
    python benchmarks/vectors.py --report benchmarks/results/K8.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from records import log
from torch import nn

from realnvp import RealNVP
from realnvp.data.moons import moons_log_density

HIDDEN = 128
BATCH = 512
BIG = 65536
LOG_2PI = math.log(2 * math.pi)


def mlp(i: int, o: int, zero_last: bool = True) -> nn.Sequential:
    net = nn.Sequential(
        nn.Linear(i, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, o)
    )
    if zero_last:
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
    return net


# -- the models ------------------------------------------------------------------------------
class Model:
    """What the benchmark needs from a library: its parameters, log_prob and sample."""

    name = ""

    def __init__(self, k: int):
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.module.parameters(), lr=1e-3)


class Ours(Model):
    name = "realnvp"
    options: ClassVar[dict] = {}

    def __init__(self, k: int):
        self.module = RealNVP(2, num_layers=k, hidden_features=HIDDEN, **self.options)

    def log_prob(self, x):
        return self.module.log_prob(x)

    def sample(self, n):
        return self.module.sample(n)

    def optimizer(self):
        from realnvp.training.loop import make_optimizer

        return make_optimizer(self.module.parameters(), lr=1e-3)


class OursBF16(Ours):
    name = "realnvp-bf16"
    options: ClassVar[dict] = {"conditioner_dtype": "bfloat16"}


class OursCompiled(Ours):
    """``flow.compile()``: torch.compile of log_prob (training, scoring) and decode (sampling)."""

    name = "realnvp-compile"

    def __init__(self, k: int):
        super().__init__(k)
        self.module.compile()


class Minimal(Model):
    """A minimal hand-written Real NVP in plain PyTorch: what 40 lines do."""

    name = "plain-pytorch"

    def __init__(self, k: int):
        self.module = nn.ModuleList(mlp(1, 2) for _ in range(k))

    def log_prob(self, x):
        log_det = x.new_zeros(len(x))
        for i, net in enumerate(self.module):
            a, b = (x[:, :1], x[:, 1:]) if i % 2 == 0 else (x[:, 1:], x[:, :1])
            raw, t = net(a).chunk(2, dim=1)
            s = 2 * torch.tanh(raw / 2)
            b = b * torch.exp(s) + t
            x = torch.cat([a, b] if i % 2 == 0 else [b, a], dim=1)
            log_det = log_det + s[:, 0]
        return -0.5 * (x * x).sum(1) - LOG_2PI + log_det

    def sample(self, n):
        z = torch.randn(n, 2)
        for i in reversed(range(len(self.module))):
            a, b = (z[:, :1], z[:, 1:]) if i % 2 == 0 else (z[:, 1:], z[:, :1])
            raw, t = self.module[i](a).chunk(2, dim=1)
            b = (b - t) * torch.exp(-2 * torch.tanh(raw / 2))
            z = torch.cat([a, b] if i % 2 == 0 else [b, a], dim=1)
        return z


class Zuko(Model):
    name = "zuko"

    def __init__(self, k):
        import zuko

        self.module = zuko.flows.RealNVP(features=2, transforms=k, hidden_features=(HIDDEN, HIDDEN))

    def log_prob(self, x):
        return self.module().log_prob(x)

    def sample(self, n):
        return self.module().sample((n,))


class Nflows(Model):
    """nflows 0.14 with the softplus scale of its GitHub master: the released
    ``sigmoid(u + 2) + 1e-3`` scale can only contract and cannot fit the data."""

    name = "nflows"

    def __init__(self, k):
        from nflows.distributions.normal import StandardNormal
        from nflows.flows.base import Flow
        from nflows.transforms.base import CompositeTransform
        from nflows.transforms.coupling import AffineCouplingTransform

        class Coupling(AffineCouplingTransform):
            def _scale_and_shift(self, params):
                n = self.num_transform_features
                scale = (torch.nn.functional.softplus(params[:, n:]) + 1e-3).clamp(0, 30)
                return scale, params[:, :n]

        class Net(nn.Module):
            def __init__(self, i, o):
                super().__init__()
                self.net = mlp(i, o, zero_last=False)

            def forward(self, x, context=None):
                return self.net(x)

        layers = [
            Coupling(
                mask=torch.tensor([0, 1] if i % 2 == 0 else [1, 0]), transform_net_create_fn=Net
            )
            for i in range(k)
        ]
        self.module = Flow(CompositeTransform(layers), StandardNormal([2]))

    def log_prob(self, x):
        return self.module.log_prob(x)

    def sample(self, n):
        return self.module.sample(n)


class Normflows(Model):
    name = "normflows"

    def __init__(self, k):
        import normflows as nf

        flows = [
            nf.flows.AffineCouplingBlock(
                nf.nets.MLP([1, HIDDEN, HIDDEN, 2], init_zeros=True),
                scale=True,
                scale_map="exp",
                split_mode="channel" if i % 2 == 0 else "channel_inv",
            )
            for i in range(k)
        ]
        base = nf.distributions.DiagGaussian(2, trainable=False)
        self.module = nf.NormalizingFlow(base, flows)

    def log_prob(self, x):
        return self.module.log_prob(x)

    def sample(self, n):
        return self.module.sample(n)[0]


class Freia(Model):
    """FrEIA's GLOWCouplingBlock holds two couplings, so K/2 blocks."""

    name = "FrEIA"

    def __init__(self, k):
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm

        inn = Ff.SequenceINN(2)
        for _ in range(k // 2):
            inn.append(Fm.GLOWCouplingBlock, subnet_constructor=lambda i, o: mlp(i, o, False))
        self.module = inn

    def log_prob(self, x):
        z, log_det = self.module(x)
        return -0.5 * (z * z).sum(1) - LOG_2PI + log_det

    def sample(self, n):
        return self.module(torch.randn(n, 2), rev=True, jac=False)[0]


MODELS: dict[str, type[Model]] = {
    m.name: m for m in (Ours, OursBF16, OursCompiled, Minimal, Zuko, Nflows, Normflows, Freia)
}


# -- data and timing -------------------------------------------------------------------------
def moons_data(noise: float = 0.05):
    from sklearn.datasets import make_moons

    x_train = make_moons(20000, noise=noise, random_state=0)[0]
    x_test = make_moons(10000, noise=noise, random_state=1)[0]
    x_big = make_moons(BIG, noise=noise, random_state=2)[0]
    mean, std = x_train.mean(0), x_train.std(0)
    as_tensor = lambda a: torch.as_tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    # the exact limit in the same standardized units: p_z(z) = p_x(x) * prod(std)
    limit = -moons_log_density(x_test, noise).mean() - np.log(std).sum()
    return as_tensor(x_train), as_tensor(x_test), as_tensor(x_big), float(limit)


def batches(n: int, steps: int, seed: int = 123) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    while len(out) < steps:
        perm = torch.randperm(n, generator=g)
        out += list(perm[: n // BATCH * BATCH].split(BATCH))
    return out[:steps]


def train_steps(model: Model, opt, x: torch.Tensor, idx: list[torch.Tensor], sched=None) -> None:
    for b in idx:
        opt.zero_grad(set_to_none=True)
        loss = -model.log_prob(x[b]).mean()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()


def per_second(fn: Callable[[], None], work: int, reps: int = 3) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return work * reps / (time.perf_counter() - start)


def bare(k: int, relu: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The conditioners' matrix multiplies alone: per layer (B,1)@(1,128), (B,128)@(128,128),
    (B,128)@(128,2), no coupling arithmetic; with ``relu``, also the biases and ReLUs."""
    g = torch.Generator().manual_seed(0)
    weights = [
        [
            torch.randn(1, HIDDEN, generator=g),
            torch.randn(HIDDEN, HIDDEN, generator=g) / 11,
            torch.randn(HIDDEN, 2, generator=g) / 11,
        ]
        for _ in range(k)
    ]
    biases = [[torch.zeros(HIDDEN), torch.zeros(HIDDEN), torch.zeros(2)] for _ in range(k)]

    def run(x: torch.Tensor) -> torch.Tensor:
        a = x[:, :1]
        for ws, bs in zip(weights, biases, strict=True):
            h = a
            for j, (w, b) in enumerate(zip(ws, bs, strict=True)):
                h = torch.addmm(b, h, w) if relu else h @ w
                if relu and j < 2:
                    h = torch.relu(h)
            a = h[:, :1]
        return a

    return run


def throughput(args, x_train, x_big, out) -> None:
    models = {}
    for name in args.libs:
        torch.manual_seed(0)
        model = MODELS[name](args.K)
        models[name] = (model, model.optimizer())
    idx = batches(len(x_train), args.warmup + args.train_steps)
    for rep in range(args.reps):
        for name, (model, opt) in models.items():
            start = time.perf_counter()
            train_steps(model, opt, x_train, idx[: args.warmup])
            warmup = time.perf_counter() - start  # on rep 0 this includes any compilation
            start = time.perf_counter()
            train_steps(model, opt, x_train, idx[args.warmup :])
            train = args.train_steps / (time.perf_counter() - start)
            with torch.no_grad():
                start = time.perf_counter()
                model.log_prob(x_big), model.sample(BIG)
                first_calls = time.perf_counter() - start  # rep 0: includes compilation
                lp = per_second(lambda m=model: m.log_prob(x_big), BIG)
                sm = per_second(lambda m=model: m.sample(BIG), BIG)
            record = {
                "kind": "tp",
                "K": args.K,
                "rep": rep,
                "lib": name,
                "train_steps_per_s": train,
                "log_prob_per_s": lp,
                "sample_per_s": sm,
                "warmup_train_s": warmup,
                "first_big_calls_s": first_calls,
            }
            log(out, record)
        with torch.no_grad():
            for relu in (False, True):
                fn = bare(args.K, relu)
                log(
                    out,
                    {
                        "kind": "bare",
                        "K": args.K,
                        "rep": rep,
                        "bias_relu": relu,
                        "points_per_s": per_second(lambda f=fn: f(x_big), BIG),
                    },
                )


def quality(args, x_train, x_test, limit, out) -> None:
    steps = 5000
    idx = batches(len(x_train), steps, seed=7 + args.seed)
    for name in args.libs:
        torch.manual_seed(args.seed)
        model = MODELS[name](args.K)
        opt = model.optimizer()
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        seconds, reached, curve = 0.0, None, []
        for start in range(0, steps, 100):
            t = time.perf_counter()
            train_steps(model, opt, x_train, idx[start : start + 100], sched)
            seconds += time.perf_counter() - t
            with torch.no_grad():
                nll = -model.log_prob(x_test).mean().item()
            curve.append(nll)
            if reached is None and nll - limit < 0.02:
                reached = (start + 100, seconds)
        log(
            out,
            {
                "kind": "quality",
                "K": args.K,
                "seed": args.seed,
                "lib": name,
                "test_nll": nll,
                "limit": limit,
                "gap": nll - limit,
                "train_seconds": seconds,
                "steps_to_0.02": None if reached is None else reached[0],
                "seconds_to_0.02": None if reached is None else reached[1],
                "test_nll_every_100_steps": curve,
            },
        )


# -- the report --------------------------------------------------------------------------------
def report(paths: list[str], ours: str = "realnvp-compile") -> str:
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line]
    lines = []
    for k in sorted({r["K"] for r in rows if "K" in r}):
        tp = [r for r in rows if r["kind"] == "tp" and r["K"] == k]
        libs = list(dict.fromkeys(r["lib"] for r in tp))
        med = {
            (lib, key): statistics.median(r[key] for r in tp if r["lib"] == lib)
            for lib in libs
            for key in ("train_steps_per_s", "log_prob_per_s", "sample_per_s")
        }
        reps = len([r for r in tp if r["lib"] == libs[0]])
        lines += [
            f"### K = {k} (median of {reps} interleaved repeats; ratio = {ours} / library)",
            "",
            "| library | train steps/s | ratio | log_prob points/s | ratio | samples/s | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for lib in libs:
            cells = []
            for key in ("train_steps_per_s", "log_prob_per_s", "sample_per_s"):
                value = med[(lib, key)]
                ref = med.get((ours, key), math.nan)
                cells += [
                    f"{value:,.0f}" if value > 1000 else f"{value:.1f}",
                    f"{ref / value:.2f}",
                ]
            lines.append(f"| {lib} | " + " | ".join(cells) + " |")
        bare_rows = [r for r in rows if r["kind"] == "bare" and r["K"] == k]
        for relu in (False, True):
            values = [r["points_per_s"] for r in bare_rows if r["bias_relu"] == relu]
            if values:
                what = "matmuls + bias + ReLU" if relu else "matmuls alone"
                value = statistics.median(values)
                ref = med.get((ours, "log_prob_per_s"), math.nan)
                lines.append(f"| bare {what} | | | {value:,.0f} | {ref / value:.2f} | | |")
        q = [r for r in rows if r["kind"] == "quality" and r["K"] == k]
        if q:
            lines += [
                "",
                f"Quality at K = {k}: 5,000 steps, batch 512, Adam 1e-3 with cosine decay; "
                f"exact limit {q[0]['limit']:.4f} nats (standardized units).",
                "",
                "| library | seed | test NLL | gap to limit | train s | steps to within 0.02 "
                "| s to within 0.02 |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in sorted(q, key=lambda r: r.get("seed", 0)):
                reach = "never" if r["steps_to_0.02"] is None else f"{r['steps_to_0.02']}"
                secs = "" if r["seconds_to_0.02"] is None else f"{r['seconds_to_0.02']:.1f}"
                lines.append(
                    f"| {r['lib']} | {r.get('seed', 0)} | {r['test_nll']:.4f} | {r['gap']:+.4f} | "
                    f"{r['train_seconds']:.1f} | {reach} | {secs} |"
                )
            seeded = {}
            for r in q:
                seeded.setdefault(r["lib"], []).append(r)
            several = {lib: rs for lib, rs in seeded.items() if len(rs) > 1}
            if several:
                lines += [
                    "",
                    "| library | seeds | mean gap | sd | mean s to within 0.02 (runs that got "
                    "there) |",
                    "|---|---|---|---|---|",
                ]
                for lib, rs in several.items():
                    gaps = [r["gap"] for r in rs]
                    reached = [r["seconds_to_0.02"] for r in rs if r["seconds_to_0.02"] is not None]
                    secs = (
                        f"{statistics.mean(reached):.1f} ({len(reached)}/{len(rs)})"
                        if reached
                        else f"never (0/{len(rs)})"
                    )
                    lines.append(
                        f"| {lib} | {len(rs)} | {statistics.mean(gaps):+.4f} | "
                        f"{statistics.stdev(gaps):.4f} | {secs} |"
                    )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=8)
    parser.add_argument("--libs", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--train-steps", type=int, default=500)
    parser.add_argument("--quality", action="store_true", help="also train 5,000 steps each")
    parser.add_argument("--seed", type=int, default=0, help="quality: model seed and batch order")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--report", nargs="+", metavar="JSONL", help="print the Markdown tables")
    parser.add_argument("--ours", default="realnvp-compile", help="the row the ratios refer to")
    args = parser.parse_args()
    if args.report:
        print(report(args.report, args.ours))
        return
    torch.set_num_threads(args.threads)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    log(
        args.out,
        {
            "kind": "meta",
            "K": args.K,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "time": time.strftime("%Y-%m-%d %H:%M"),
        },
    )
    x_train, x_test, x_big, limit = moons_data()
    if not args.no_throughput:
        throughput(args, x_train, x_big, args.out)
    if args.quality:
        quality(args, x_train, x_test, limit, args.out)


if __name__ == "__main__":
    main()
