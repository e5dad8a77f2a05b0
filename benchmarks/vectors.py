"""The same Real NVP in realnvp and in its peers, timed on equal work in one process.

Every model: 2-D input, K affine couplings on alternating halves, one conditioner MLP per coupling
(1 -> 128 -> 128 -> 2, ReLU) yielding shift and log-scale, a standard normal base. Data:
two moons (noise 0.05), standardized with the training mean and std; the same batches for all.

Measured, with the libraries interleaved (``for rep: for lib:``) and medians reported:
- train: Adam (lr 1e-3, fused, the same for all) steps per second at batch 512 (``--train-steps``
  timed after a warm-up);
- log_prob: points per second at batch 65,536 under ``no_grad``;
- sample: samples per second at batch 65,536 under ``no_grad``;
- bare: the same matrix multiplies with no flow around them (and with bias + ReLU), what the
  machine can do for this network;
- limit: the machine's limit for the same work (``gemm_limit``), float32 and bf16;
- time to quality (``--ttq``): training seconds until the test NLL (every 50 steps, not timed)
  first comes within 0.02 and 0.01 nats of the exact limit of the two-moons law;
- ``--check-gradients``: float32 gradients, eager and compiled, against float64's.
Each peer also runs as ``<name>-compile`` (``Model.compile``). The earlier ``--quality`` mode
(test NLL after 5,000 steps, time to 0.02) gave way to ``--ttq``; ``--report`` still prints its
records in ``results/K8.jsonl``.

Usage (peers from ``pip install -e .[bench]``; run nothing else at the same time): README's
Performance section gives the commands behind ``results/vectors.jsonl``; then
    python benchmarks/vectors.py --report benchmarks/results/vectors.jsonl
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from records import log, read
from torch import nn

from realnvp import RealNVP
from realnvp.data.moons import moons_log_density
from realnvp.training.loop import Callback, Evaluation, Trainer

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
        """Every library gets the same optimizer: Adam with lr 1e-3, fused into one kernel per
        step (``realnvp.training.loop.make_optimizer``, torch's own ``Adam(fused=True)``)."""
        from realnvp.training.loop import make_optimizer

        return make_optimizer(self.module.parameters(), lr=1e-3)

    def compile(self) -> None:
        """``torch.compile`` of log_prob and sample, as ``flow.compile()`` compiles ours."""
        self.log_prob = torch.compile(self.log_prob)  # type: ignore[method-assign]
        self.sample = torch.compile(self.sample)  # type: ignore[method-assign]


class Ours(Model):
    name = "realnvp"
    options: ClassVar[dict] = {}

    def __init__(self, k: int):
        self.module = RealNVP(2, num_layers=k, hidden_features=HIDDEN, **self.options)

    def log_prob(self, x):
        return self.module.log_prob(x)

    def sample(self, n):
        return self.module.sample(n)

    def compile(self) -> None:
        self.module.compile()


class OursBF16(Ours):
    name = "realnvp-bf16"
    options: ClassVar[dict] = {"conditioner_dtype": "bfloat16"}


class OursSpline(Ours):
    """The same with rational-quadratic spline couplings (the default for tables)."""

    name = "realnvp-spline"
    options: ClassVar[dict] = {"coupling": "spline"}


class OursCompiled(Ours):
    """``flow.compile()``: torch.compile of log_prob (training, scoring) and decode (sampling)."""

    name = "realnvp-compile"

    def __init__(self, k: int):
        super().__init__(k)
        self.compile()


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


class ZukoNSF(Zuko):
    """zuko's neural spline flow (8 bins), the peer's own answer to the same data: in the
    time-to-quality race beside the affine Real NVPs."""

    name = "zuko-nsf"

    def __init__(self, k):
        import zuko

        self.module = zuko.flows.NSF(features=2, transforms=k, hidden_features=(HIDDEN, HIDDEN))


def compiled(model: type[Model]) -> type[Model]:
    """``model`` with ``Model.compile`` applied when it is built, named ``<name>-compile``."""

    def __init__(self, k: int) -> None:
        model.__init__(self, k)
        self.compile()

    attrs = {"name": f"{model.name}-compile", "__init__": __init__}
    return type(f"{model.__name__}Compiled", (model,), attrs)


PEERS: tuple[type[Model], ...] = (Minimal, Zuko, Nflows, Normflows, Freia, ZukoNSF)
MODELS: dict[str, type[Model]] = {
    m.name: m
    for m in (Ours, OursBF16, OursSpline, OursCompiled, *PEERS, *(compiled(p) for p in PEERS))
}


# -- data and timing -------------------------------------------------------------------------
def moons_raw(noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The training and test points (20,000 and 10,000) in the data's own units."""
    from sklearn.datasets import make_moons

    x_train = make_moons(20000, noise=noise, random_state=0)[0]
    x_test = make_moons(10000, noise=noise, random_state=1)[0]
    return x_train, x_test


def moons_data(noise: float = 0.05):
    from sklearn.datasets import make_moons

    x_train, x_test = moons_raw(noise)
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


def gemm_limit(k: int, dtype: torch.dtype, reps: int = 3) -> dict[str, float]:
    """The machine's limit for this work: the rates if the only cost were each conditioner's
    one square matrix multiply, (B, 128) @ (128, 128), timed alone in ``dtype`` at the
    benchmark's batches: K of them per log_prob or sample point at batch 65,536, 3K per
    training step at batch 512 (forward, and the backward's input and weight gradients).
    Everything else (the first and last layers, biases, ReLUs, the coupling arithmetic and
    log-det, Adam) counts as free, so no implementation can reach it; a fraction of it is a
    lower bound on how near a library runs to what this machine can do."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(HIDDEN, HIDDEN, generator=g).to(dtype)
    big = torch.randn(BIG, HIDDEN, generator=g).to(dtype)
    small = torch.randn(BATCH, HIDDEN, generator=g).to(dtype)
    grad = torch.randn(BATCH, HIDDEN, generator=g).to(dtype)

    def forward() -> None:
        for _ in range(k):
            torch.mm(big, w)

    def step() -> None:
        for _ in range(k):
            torch.mm(small, w), torch.mm(grad, w.T), torch.mm(small.T, grad)

    points = per_second(forward, BIG, reps)
    return {"points_per_s": points, "train_steps_per_s": per_second(step, 1, reps * 20)}


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
            for dtype in (torch.float32, torch.bfloat16):
                record = {"kind": "limit", "K": args.K, "rep": rep, "dtype": str(dtype)[6:]}
                log(out, record | gemm_limit(args.K, dtype))
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


# -- gradients under compile -------------------------------------------------------------------
def gradient_check(name: str, x_train: torch.Tensor, steps: int = 100) -> dict:
    """After ``steps`` eager training steps of ``MODELS[name]``, the largest relative error (in
    norm, over the parameters) of its float32 gradients of the mean log_prob on one batch,
    eager and under ``torch.compile``, against float64's; and the largest log_prob difference
    between compiled and eager. A compiled model trains on the right gradients if its error is
    of the eager one's order."""
    import copy

    torch.manual_seed(0)
    model = MODELS[name](8)
    train_steps(model, model.optimizer(), x_train, batches(len(x_train), steps, seed=7))
    eager = type(model).log_prob.__get__(model)
    compiled = torch.compile(eager)
    exact = copy.deepcopy(model)
    exact.module.double()
    x = x_train[:BATCH]
    params = list(model.module.parameters())
    want = torch.autograd.grad(exact.log_prob(x.double()).mean(), list(exact.module.parameters()))

    def worst(log_prob) -> float:
        got = torch.autograd.grad(log_prob(x).mean(), params)
        pairs = zip(got, want, strict=True)
        return max(((g.double() - w).norm() / w.norm()).item() for g, w in pairs)

    with torch.no_grad():
        lp_diff = (compiled(x) - eager(x)).abs().max().item()
    return {
        "kind": "gradients",
        "lib": name,
        "eager_error": worst(eager),
        "compiled_error": worst(compiled),
        "log_prob_diff": lp_diff,
    }


# -- time to quality -------------------------------------------------------------------------
#: nats above the exact limit of the two-moons law that count as "there"
TARGETS = (0.02, 0.01)
#: the time-to-quality runs' test NLL is taken every this many steps (not timed)
EVAL_EVERY = 50
#: ours as a user gets it: ``RealNVP.for_data`` (the model for 20,000 rows of 2 columns) trained
#: by ``Trainer`` with ``RealNVP.recipe_for``; and the same after ``flow.compile()``
DEFAULT = "realnvp-default"
DEFAULTS = (DEFAULT, f"{DEFAULT}-compile")


class TrainClock(Callback):
    """A ``Trainer`` callback that counts training time only: from the end of each evaluation
    (or the start) to each step's end, so the test NLL it takes at each evaluation is free."""

    def __init__(self) -> None:
        self.seconds, self.mark = 0.0, 0.0
        self.curve: list[tuple[int, float, float]] = []

    def on_start(self, trainer: Trainer) -> None:
        self.mark = time.perf_counter()

    def on_step(self, trainer: Trainer) -> None:
        now = time.perf_counter()
        self.seconds += now - self.mark
        self.mark = now

    def on_evaluation(self, trainer: Trainer, evaluation: Evaluation) -> None:
        assert evaluation.val_nll is not None
        self.curve.append((evaluation.step, self.seconds, evaluation.val_nll))
        self.mark = time.perf_counter()


class EagerTest:
    """The test NLL as ``Trainer`` validates it, through the flow class's own (eager)
    ``log_prob``: a compiled flow is not compiled anew for the test set's shape, so the
    training steps keep their graph and the evaluation costs nothing they are timed for."""

    def __init__(self, x_test: torch.Tensor):
        self.x_test = x_test

    @torch.no_grad()
    def mean_nll(self, flow: RealNVP) -> float:
        return -type(flow).log_prob(flow, self.x_test).mean().item()


def warm_up(log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, params) -> float:
    """Seconds of one forward and backward pass on ``x`` with no update: a compiled model
    compiles here, reported apart from the training time; gradients are cleared after."""
    start = time.perf_counter()
    (-log_prob(x).mean()).backward()
    for p in params:
        p.grad = None
    return time.perf_counter() - start


def default_curve(seed: int, compile_: bool, steps: int) -> tuple[list, float]:
    """(step, training seconds, test NLL in the data's units) every ``EVAL_EVERY`` steps of
    realnvp's defaults on the raw two moons, and the seconds of the compiling warm-up; the
    recipe is ``recipe_for``'s but for evaluating on the test set every ``EVAL_EVERY`` steps,
    never stopping early."""
    raw_train, raw_test = moons_raw()
    torch.manual_seed(seed)
    flow = RealNVP.for_data(raw_train)
    recipe = replace(
        RealNVP.recipe_for(raw_train.shape),
        steps=steps,
        eval_every=EVAL_EVERY,
        patience=None,
        seed=seed,
    )
    x = flow.as_input(raw_train)
    warm = 0.0
    if compile_:
        flow.compile()
        warm = warm_up(flow.log_prob, x[: recipe.batch_size], flow.parameters())
    clock = TrainClock()
    Trainer(flow, x, EagerTest(flow.prepare(raw_test)), recipe, callbacks=[clock]).fit()
    return clock.curve, warm


def peer_curve(name: str, k: int, seed: int, steps: int, x_train, x_test) -> tuple[list, float]:
    """The same as ``default_curve`` for ``MODELS[name]`` (standardized units) trained by this
    benchmark's loop: Adam 1e-3 fused, cosine decay over ``steps``, batch 512."""
    torch.manual_seed(seed)
    model = MODELS[name](k)
    eager = type(model).log_prob.__get__(model)  # the class's own: never compiled
    warm = warm_up(model.log_prob, x_train[:BATCH], model.module.parameters())
    opt = model.optimizer()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    idx = batches(len(x_train), steps, seed=7 + seed)
    seconds, curve = 0.0, []
    for start in range(0, steps, EVAL_EVERY):
        t = time.perf_counter()
        train_steps(model, opt, x_train, idx[start : start + EVAL_EVERY], sched)
        seconds += time.perf_counter() - t
        with torch.no_grad():
            curve.append((start + EVAL_EVERY, seconds, -eager(x_test).mean().item()))
    return curve, warm


def first_within(curve, limit: float, target: float) -> tuple[int, float] | None:
    """The (step, seconds) of the first evaluation within ``target`` nats of ``limit``."""
    return next(((s, t) for s, t, nll in curve if nll - limit < target), None)


def time_to_quality(args, x_train, x_test, limit, out) -> None:
    """Each of ``args.ttq`` trained ``args.ttq_steps`` steps from seed ``args.seed``: the
    training seconds until the test NLL first comes within each of ``TARGETS`` of the limit."""
    raw_limit = -moons_log_density(moons_raw()[1], 0.05).mean()
    for name in args.ttq:
        if name in DEFAULTS:
            compile_ = name.endswith("-compile")
            (curve, warm), lim = default_curve(args.seed, compile_, args.ttq_steps), raw_limit
        else:
            curve, warm = peer_curve(name, args.K, args.seed, args.ttq_steps, x_train, x_test)
            lim = limit
        record = {"kind": "ttq", "K": args.K, "seed": args.seed, "lib": name}
        record["compiled"] = name.endswith("-compile")
        if name in DEFAULTS:  # the recipe's weight decay, which follows the library's version
            record["weight_decay"] = RealNVP.recipe_for(moons_raw()[0].shape).weight_decay
        for target in TARGETS:
            hit = first_within(curve, lim, target)
            record[f"steps_to_{target}"] = None if hit is None else hit[0]
            record[f"seconds_to_{target}"] = None if hit is None else hit[1]
        record |= {"final_gap": curve[-1][2] - lim, "train_seconds": curve[-1][1]}
        record["warm_up_seconds"] = warm  # one forward and backward: compilation, if compiled
        record["curve"] = [(s, round(t, 3), round(nll - lim, 5)) for s, t, nll in curve]
        log(out, record)


# -- the report --------------------------------------------------------------------------------
KEYS = ("train_steps_per_s", "log_prob_per_s", "sample_per_s")


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value > 1000 else f"{value:.1f}"


def throughput_table(rows: list[dict], k: int, ours: str) -> list[str]:
    """Medians over the repeats, the ratio of ``ours`` to each, and each as a percentage of
    the float32 GEMM limit (``gemm_limit``) measured in the same run."""
    tp = [r for r in rows if r["kind"] == "tp" and r["K"] == k]
    libs = list(dict.fromkeys(r["lib"] for r in tp))
    if not libs:
        return []
    med = {
        (lib, key): statistics.median(r[key] for r in tp if r["lib"] == lib)
        for lib in libs
        for key in KEYS
    }
    limits = {}
    for dtype in ("float32", "bfloat16"):
        mine = [r for r in rows if r["kind"] == "limit" and r["K"] == k and r["dtype"] == dtype]
        if mine:
            points = statistics.median(r["points_per_s"] for r in mine)
            steps = statistics.median(r["train_steps_per_s"] for r in mine)
            limits[dtype] = dict(zip(KEYS, (steps, points, points), strict=True))
    reps = len([r for r in tp if r["lib"] == libs[0]])
    per = " | % of limit" if "float32" in limits else ""
    lines = [
        f"### K = {k} (median of {reps} interleaved repeats; ratio = {ours} / library"
        + ("; % of the float32 GEMM limit" if per else "")
        + ")",
        "",
        f"| library | train steps/s | ratio{per} | log_prob points/s | ratio{per} "
        f"| samples/s | ratio{per} |",
        "|---|" + "---|---|" * 3 + ("---|" * 3 if per else ""),
    ]
    for lib in libs:
        cells = []
        for key in KEYS:
            value = med[(lib, key)]
            cells += [_rate(value), f"{med.get((ours, key), math.nan) / value:.2f}"]
            if per:
                cells.append(f"{100 * value / limits['float32'][key]:.0f}%")
        lines.append(f"| {lib} | " + " | ".join(cells) + " |")
    width = 3 if per else 2  # cells per measure

    def row(name: str, values: list[str | None]) -> str:
        cells = []
        for value in values:
            cells += [value or ""] + [""] * (width - 1)
        return f"| {name} | " + " | ".join(cells) + " |"

    for dtype, limit in limits.items():
        lines.append(row(f"GEMM limit, {dtype}", [_rate(limit[key]) for key in KEYS]))
    ref = med.get((ours, "log_prob_per_s"), math.nan)
    for relu in (False, True):
        values = [
            r["points_per_s"]
            for r in rows
            if r["kind"] == "bare" and r["K"] == k and r["bias_relu"] == relu
        ]
        if values:
            what = "matmuls + bias + ReLU" if relu else "matmuls alone"
            value = statistics.median(values)
            line = row(f"bare {what}", [None, f"{value:,.0f}", None])
            lines.append(line.replace(f"{value:,.0f} | ", f"{value:,.0f} | {ref / value:.2f}", 1))
    return lines


def quality_table(rows: list[dict], k: int) -> list[str]:
    q = [r for r in rows if r["kind"] == "quality" and r["K"] == k]
    if not q:
        return []
    lines = [
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
    seeded: dict[str, list[dict]] = {}
    for r in q:
        seeded.setdefault(r["lib"], []).append(r)
    several = {lib: rs for lib, rs in seeded.items() if len(rs) > 1}
    if several:
        lines += [
            "",
            "| library | seeds | mean gap | sd | mean s to within 0.02 (runs that got there) |",
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
    return lines


def median_reached(rs: list[dict], key: str) -> tuple[float, int]:
    """The median of ``key`` over the runs, a run that never got there counting as infinitely
    slow (so the median is infinite when fewer than half got there), and how many got there."""
    values = [math.inf if r[key] is None else r[key] for r in rs]
    return statistics.median(values), sum(v != math.inf for v in values)


#: the weight decay of realnvp's defaults for the two moons' 20,000 rows in the records that
#: predate ``record["weight_decay"]`` (``table_sizes`` gave every table 3e-3 then)
EARLIER_DEFAULT_WEIGHT_DECAY = 3e-3


def ttq_label(record: dict) -> str:
    """The row a time-to-quality record counts in: its library, and for realnvp's defaults the
    recipe's weight decay, so runs of an earlier default stay apart from the current ones."""
    if record["lib"] not in DEFAULTS:
        return record["lib"]
    decay = record.get("weight_decay", EARLIER_DEFAULT_WEIGHT_DECAY)
    return f"{record['lib']}, weight decay {decay:g}"


def ttq_table(rows: list[dict], k: int, ours: str = DEFAULTS[1]) -> list[str]:
    """Time to quality: per library the median over seeds of the training seconds to within
    each target of the limit (the newest record of each seed), and the fastest peer's median
    over ours (``ours``: the newest default's row)."""
    t = [r for r in rows if r["kind"] == "ttq" and r["K"] == k]
    if not t:
        return []
    newest: dict[tuple[str, int], dict] = {}
    for r in t:
        newest[(ttq_label(r), r["seed"])] = r
    by: dict[str, list[dict]] = {}
    for (label, _), r in newest.items():
        by.setdefault(label, []).append(r)
    ours = next((ttq_label(r) for r in reversed(t) if r["lib"] == ours), ours)
    # the newest default first, an earlier default's runs after it, then the peers
    order = {label: 1 for label in by if label.startswith(DEFAULT)} | {ours: 0}
    by = dict(sorted(by.items(), key=lambda item: order.get(item[0], 2)))
    heads = " | ".join(f"s to {x} (got there) | steps" for x in TARGETS)
    lines = [
        "",
        f"Time to quality at K = {k} (training seconds only, test NLL every {EVAL_EVERY} steps "
        "untimed; medians over seeds; compilation reported apart):",
        "",
        f"| library | seeds | {heads} | final gap | warm-up s |",
        "|---|---|" + "---|---|" * len(TARGETS) + "---|---|",
    ]
    medians: dict[str, dict[float, float]] = {}
    for lib, rs in by.items():
        cells = []
        for x in TARGETS:
            secs, got = median_reached(rs, f"seconds_to_{x}")
            steps, _ = median_reached(rs, f"steps_to_{x}")
            medians.setdefault(lib, {})[x] = secs
            shown = "never" if secs == math.inf else f"{secs:.1f}"
            cells += [f"{shown} ({got}/{len(rs)})", "" if steps == math.inf else f"{steps:.0f}"]
        gap = statistics.median(r["final_gap"] for r in rs)
        warm = statistics.median(r["warm_up_seconds"] for r in rs)
        cells += [f"{gap:+.4f}", f"{warm:.1f}"]
        lines.append(f"| {lib} | {len(rs)} | " + " | ".join(cells) + " |")
    if ours in medians and len(medians) > 1:
        for x in TARGETS:
            others = {lib: m[x] for lib, m in medians.items() if not lib.startswith("realnvp")}
            if not others:
                continue
            best = min(others, key=others.get)  # type: ignore[arg-type]
            if math.inf in (others[best], medians[ours][x]):
                lines.append(
                    f"\nWithin {x}: median seconds, the fastest peer ({best}) "
                    f"{others[best]:.1f}, {ours} {medians[ours][x]:.1f} (inf: not reached in "
                    "half the seeds or more)."
                )
                continue
            lines.append(
                f"\nWithin {x}: the fastest peer, {best}, takes {others[best]:.1f} s; "
                f"{ours} {medians[ours][x]:.1f} s: {others[best] / medians[ours][x]:.2f} times "
                "shorter."
            )
    return lines


def gradients_table(rows: list[dict]) -> list[str]:
    g = [r for r in rows if r["kind"] == "gradients"]
    if not g:
        return []
    lines = [
        "",
        "Gradients under torch.compile (`--check-gradients`): after 100 eager training steps, "
        "the largest relative error over the parameters of the float32 gradient of the mean "
        "log_prob on one batch of 512, against float64's:",
        "",
        "| model | eager | compiled | compiled - eager log_prob, max |",
        "|---|---|---|---|",
    ]
    for r in g:
        lines.append(
            f"| {r['lib']} | {r['eager_error']:.1e} | {r['compiled_error']:.1e} "
            f"| {r['log_prob_diff']:.1e} |"
        )
    return lines


def report(paths: list[str], ours: str = "realnvp-compile") -> str:
    rows = read(paths)
    lines: list[str] = []
    for k in sorted({r["K"] for r in rows if "K" in r}):
        lines += throughput_table(rows, k, ours) + quality_table(rows, k) + ttq_table(rows, k)
        lines.append("")
    return "\n".join(lines + gradients_table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=8)
    parser.add_argument("--libs", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--train-steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0, help="--ttq: model seed and batch order")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument(
        "--ttq",
        nargs="+",
        default=[],
        choices=[*DEFAULTS, *MODELS],
        help="time to quality: train each, timing training only, to TARGETS of the limit",
    )
    parser.add_argument("--ttq-steps", type=int, default=5000)
    parser.add_argument(
        "--check-gradients",
        nargs="+",
        default=[],
        choices=list(MODELS),
        help="compiled against eager gradients, each against float64's",
    )
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
    if args.ttq:
        time_to_quality(args, x_train, x_test, limit, args.out)
    for name in args.check_gradients:
        log(args.out, gradient_check(name, x_train))


if __name__ == "__main__":
    main()
