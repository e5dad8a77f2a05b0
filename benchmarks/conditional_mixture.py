"""The exact conditional limit: conditional flows on a 2-D density p(x | c) known in closed form.

The density. The context c = (c1, c2) is uniform on [-1, 1]^2. Given c, x in R^2 is a mixture of
K = 3 Gaussians whose weights, means and covariances bend with c:

    p(x | c) = sum_k w_k(c) N(x; mu_k(c), Sigma_k(c)),    k = 0, 1, 2

    theta(c) = (pi/2) c1 + (pi/4) sin(pi c2)              angle the mixture is rotated by
    phi_k(c) = theta(c) + 2 pi k / 3                      direction of component k
    u(phi)   = (cos phi, sin phi),  v(phi) = (-sin phi, cos phi)
    r(c)     = 1.6 + 0.6 c1 c2                            radius of the means' circle
    m(c)     = (0.5 c2^2, 0.5 sin(pi c1))                 centre of that circle
    mu_k(c)  = m(c) + r(c) u(phi_k(c))
    s(c)     = exp(0.5 c2 + 0.25 c1^2)                    width factor: 0.61 .. 2.1 (3.5x in std)
    Sigma_k(c) = s(c)^2 [a_k^2 u u^T + b_k^2 v v^T],  u, v at phi_k(c)
                 a = (0.12, 0.30, 0.45) across the circle (radial std at s = 1),
                 b = (0.55, 0.30, 0.15) along it (tangential std at s = 1)
    w(c)     = softmax(beta(c)),  beta(c) = (c1 + 0.3, 0.8 c2 - 0.4 c1, -0.8 c2 + 0.5 c1 c2)

so component 0 is a thin arc-like ellipse along the circle, 1 is round and 2 points outwards;
the three rotate with c1 and c2, their circle moves and changes size, and their widths change
by a factor of 3.5. ``log_prob`` is exact: each component in its own frame,
log N = -log 2pi - 2 log s - log a_k - log b_k - ((d.u / s a_k)^2 + (d.v / s b_k)^2) / 2 with
d = x - mu_k, combined with a log-sum-exp. ``--check`` integrates p(. | c) over a fine grid for
a few fixed c (each must give 1) and compares the grid's entropy -int p log p with the mean of
-log p over samples drawn at that c.

The protocol. Fixed data sets: 50,000 training pairs (seed 0), 5,000 validation pairs (seed 1),
50,000 test pairs (seed 2). Every model sees x and c standardized with the training set's mean
and std (ddof 0): realnvp does it itself (``RealNVP.for_data``), the peers get standardized
float32 tensors and their log-densities are moved back to the data's units (minus sum log
std_x). Every model trains ``--steps`` Adam steps (default 3,000; lr 1e-3 by realnvp's
``make_optimizer``, cosine decay to 0) on the same mini-batches of 512
(``realnvp.training.loop.batch_indices`` from the run's seed, which also seeds the weights; the
last short batch of each epoch is dropped), scores the validation set every 100 steps, never
stops early and ends with its best-validation weights. Reported per model and seed: the test
NLL, the exact NLL (mean of -log p(x | c) over the test set), the gap = test NLL - exact NLL and
its paired standard error sd_i(-log q(x_i | c_i) + log p(x_i | c_i)) / sqrt(n), which holds the
test set's sampling noise only (the spread over seeds is the report's second table), the
parameter count, the step of the best validation NLL and the seconds (training with its
validation passes, then the test pass).

The models, of similar size (about 138k parameters, two hidden layers of 128 everywhere):
- ``realnvp``: ``RealNVP.for_data(x, context=c, ...)``, 8 affine couplings;
  ``realnvp_spline`` the same with ``coupling="spline"`` (8 rational-quadratic spline couplings,
  8 bins; a larger last layer, so more parameters), ``realnvp_context_affine`` those spline
  couplings after a ``ContextAffine`` (an MLP of the context shifting and scaling x), the
  layers of the library's conditional default at this width (``context_affine=False`` is given
  to the other two, so they stay the models they were);
- ``zuko_realnvp``: ``zuko.flows.RealNVP(features=2, context=2, transforms=8,
  hidden_features=[128, 128])``, zuko's affine couplings, its defaults otherwise;
- ``zuko_nsf``: ``zuko.flows.NSF(features=2, context=2, transforms=6, hidden_features=[128,
  128])``, zuko's autoregressive rational-quadratic splines (8 bins), its defaults otherwise;
  each transform updates both coordinates, so 6 of them match the others' parameter count.

Calibration (zuko 1.6.0, torch 2.13.0 CPU, 1 thread, 3,000 steps, seeds 0, 1, 2; exact test
NLL 1.3565 nats): zuko_nsf gaps +0.0399, +0.0397, +0.0392 (paired SE 0.0012), about 170 s a run
on an idle core; zuko_realnvp +0.277, +0.145, +0.130 (paired SE 0.002-0.004), about 110 s a run.
The affine flows' spread over seeds is far larger than their paired SE: compare them over
several seeds (the report's second table).

Usage (zuko from ``pip install torch==2.13.0 -e ".[bench]"``; run nothing else at the same time;
``--models`` takes a comma-separated subset of ``MODELS``, all by default):
    python benchmarks/conditional_mixture.py --check
    python benchmarks/conditional_mixture.py --steps 3000 --seeds 0 1 2 \\
        --out benchmarks/results/conditional_mixture.jsonl
    python benchmarks/conditional_mixture.py --report benchmarks/results/conditional_mixture.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from records import log, read, versions
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from realnvp.training.loop import batch_indices, make_optimizer

TRAIN, VAL, TEST = 50_000, 5_000, 50_000
DATA_SEEDS = {"train": 0, "val": 1, "test": 2}
BATCH = 512
LR = 1e-3
EVAL_EVERY = 100
HIDDEN = 128
LAYERS = {
    "realnvp": 8,
    "realnvp_spline": 8,
    "realnvp_context_affine": 8,
    "zuko_realnvp": 8,
    "zuko_nsf": 6,
}

# -- the density -----------------------------------------------------------------------------
RADIAL = np.array([0.12, 0.30, 0.45])  # a_k
TANGENTIAL = np.array([0.55, 0.30, 0.15])  # b_k
K = len(RADIAL)
LOG_2PI = math.log(2 * math.pi)


def components(c: NDArray) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """The mixture at each context row: log-weights (n, K), means (n, K, 2), unit directions
    u (n, K, 2) of each component's first axis, and the width factor s (n,)."""
    c = np.asarray(c, dtype=np.float64)
    c1, c2 = c[:, 0], c[:, 1]
    theta = np.pi / 2 * c1 + np.pi / 4 * np.sin(np.pi * c2)
    phi = theta[:, None] + 2 * np.pi * np.arange(K) / K
    u = np.stack([np.cos(phi), np.sin(phi)], axis=-1)
    r = 1.6 + 0.6 * c1 * c2
    centre = np.stack([0.5 * c2**2, 0.5 * np.sin(np.pi * c1)], axis=-1)
    means = centre[:, None, :] + r[:, None, None] * u
    s = np.exp(0.5 * c2 + 0.25 * c1**2)
    beta = np.stack([c1 + 0.3, 0.8 * c2 - 0.4 * c1, -0.8 * c2 + 0.5 * c1 * c2], axis=-1)
    return beta - logsumexp(beta, axis=1, keepdims=True), means, u, s


def log_prob(x: NDArray, c: NDArray) -> NDArray:
    """Exact log p(x | c) of each row: (n, 2), (n, 2) -> (n,)."""
    log_w, means, u, s = components(c)
    d = np.asarray(x, dtype=np.float64)[:, None, :] - means
    along_u = (d * u).sum(-1)  # d . u
    along_v = d[..., 1] * u[..., 0] - d[..., 0] * u[..., 1]  # d . v, v = (-u_y, u_x)
    a, b = s[:, None] * RADIAL, s[:, None] * TANGENTIAL
    log_n = -LOG_2PI - np.log(a) - np.log(b) - 0.5 * ((along_u / a) ** 2 + (along_v / b) ** 2)
    return logsumexp(log_w + log_n, axis=1)


def sample_given(c: NDArray, rng: np.random.Generator) -> NDArray:
    """One x ~ p(x | c) per row of ``c`` (n, 2) -> (n, 2)."""
    log_w, means, u, s = components(c)
    n = len(c)
    k = (rng.random(n)[:, None] > np.cumsum(np.exp(log_w), axis=1)).sum(1).clip(max=K - 1)
    rows = np.arange(n)
    z = rng.standard_normal((n, 2))
    uk = u[rows, k]
    vk = np.stack([-uk[:, 1], uk[:, 0]], axis=-1)
    return (
        means[rows, k]
        + (s * RADIAL[k] * z[:, 0])[:, None] * uk
        + (s * TANGENTIAL[k] * z[:, 1])[:, None] * vk
    )


def sample(n: int, rng: np.random.Generator) -> tuple[NDArray, NDArray]:
    """n pairs (x, c): c uniform on [-1, 1]^2, then x ~ p(x | c); float64 (n, 2) each."""
    c = rng.uniform(-1.0, 1.0, size=(n, 2))
    return sample_given(c, rng), c


def datasets() -> dict[str, tuple[NDArray, NDArray]]:
    """The fixed train, validation and test pairs."""
    sizes = {"train": TRAIN, "val": VAL, "test": TEST}
    return {k: sample(n, np.random.default_rng(DATA_SEEDS[k])) for k, n in sizes.items()}


def check(grid: int = 2001, half_width: float = 10.0, n: int = 1_000_000) -> list[dict]:
    """The density integrates to one over x at a few fixed c (trapezoid rule on a
    ``grid`` x ``grid`` square of half-width ``half_width``), the mean of -log p over ``n``
    samples at that c matches the grid's entropy -int p log p (within a few SE), and
    ``log_prob`` agrees with scipy's multivariate normal on random pairs; last, the exact
    test NLL."""
    t = np.linspace(-half_width, half_width, grid)
    rows = []
    rng = np.random.default_rng(123)
    for c in [(-1, -1), (-1, 1), (0, 0), (0.5, -0.3), (1, -1), (1, 1)]:
        c_row = np.asarray(c, dtype=np.float64)
        lp = np.stack(  # row i: x = (t[i], t)
            [log_prob(np.stack([np.full(grid, ti), t], 1), np.tile(c_row, (grid, 1))) for ti in t]
        )
        p = np.exp(lp)
        total = np.trapezoid(np.trapezoid(p, t, axis=1), t)
        entropy = -np.trapezoid(np.trapezoid(p * lp, t, axis=1), t)
        cs = np.tile(c_row, (n, 1))
        nll = -log_prob(sample_given(cs, rng), cs)
        rows.append(
            {
                "c": list(c),
                "integral": float(total),
                "integral_minus_1": float(total - 1),
                "grid_entropy": float(entropy),
                "sample_nll": float(nll.mean()),
                "sample_se": float(nll.std(ddof=1) / math.sqrt(n)),
                "difference_in_se": float((entropy - nll.mean()) * math.sqrt(n) / nll.std(ddof=1)),
            }
        )
    # log_prob against scipy's multivariate normal with the covariances written out in full
    x, c = sample(2000, rng)
    log_w, means, u, s = components(c)
    v = np.stack([-u[..., 1], u[..., 0]], axis=-1)
    outer = lambda e: e[..., :, None] * e[..., None, :]  # noqa: E731
    a, b = RADIAL[:, None, None] ** 2, TANGENTIAL[:, None, None] ** 2
    cov = s[:, None, None, None] ** 2 * (a * outer(u) + b * outer(v))
    log_n = [
        [multivariate_normal.logpdf(x[i], means[i, k], cov[i, k]) for k in range(K)]
        for i in range(len(x))
    ]
    reference = logsumexp(log_w + np.array(log_n), axis=1)
    rows.append({"max_abs_error_vs_scipy": float(np.abs(log_prob(x, c) - reference).max())})
    test = datasets()["test"]
    rows.append({"exact_test_nll": float(-log_prob(*test).mean()), "n_test": TEST})
    return rows


# -- the models --------------------------------------------------------------------------------
@dataclass
class Fitted:
    """A trained conditional model: ``fitted(x, c)`` is log q(x | c) in the data's units, (n,)
    numpy; ``params`` its parameter count, ``best_step`` the step of its best validation NLL."""

    log_prob: Callable[[NDArray, NDArray], NDArray]
    params: int
    best_step: int

    def __call__(self, x: NDArray, c: NDArray) -> NDArray:
        return self.log_prob(x, c)


def fit_realnvp(
    x_train: NDArray,
    c_train: NDArray,
    x_val: NDArray,
    c_val: NDArray,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    coupling: str = "affine",
    context_affine: bool = False,
) -> Fitted:
    """realnvp's conditional RealNVP (``coupling``: its affine couplings, or its
    rational-quadratic splines; ``context_affine``: a ``ContextAffine`` first, as the
    library's conditional default has), trained by the library's own ``fit`` on (x, c) pairs
    with the protocol's settings; returns log q(x | c) in the data's units
    (``RealNVP.for_data`` standardizes x and c with the training set's statistics inside the
    flow, in float64)."""
    from realnvp import RealNVP, TrainConfig
    from realnvp.training import evaluate_nll, fit

    torch.manual_seed(seed)  # the weights; the batches come from config.seed, as the peers'
    flow = RealNVP.for_data(
        x_train,
        context=c_train,
        num_layers=LAYERS["realnvp"],
        hidden_features=HIDDEN,
        num_hidden_layers=2,
        coupling=coupling,
        context_affine=context_affine,
    )
    config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        schedule="cosine",
        eval_every=EVAL_EVERY,
        patience=None,
        seed=seed,
    )
    val = (flow.as_input(x_val), flow.as_context(c_val))
    history = fit(flow, (flow.as_input(x_train), flow.as_context(c_train)), val, config)

    def log_q(x: NDArray, c: NDArray) -> NDArray:
        nll = evaluate_nll(flow, flow.as_input(x), context=flow.as_context(c))
        return -nll.double().numpy()

    params = sum(p.numel() for p in flow.parameters() if p.requires_grad)
    return Fitted(log_q, params, history.best_step)


class Standardized:
    """x and c standardized with the training set's mean and std, as float32 tensors."""

    def __init__(self, x_train: NDArray, c_train: NDArray):
        self.x_mean, self.x_std = x_train.mean(0), x_train.std(0)
        self.c_mean, self.c_std = c_train.mean(0), c_train.std(0)
        self.log_jacobian = float(np.log(self.x_std).sum())

    def __call__(self, x: NDArray, c: NDArray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor((x - self.x_mean) / self.x_std, dtype=torch.float32)
        return x, torch.as_tensor((c - self.c_mean) / self.c_std, dtype=torch.float32)


def train_peer(
    flow: torch.nn.Module,
    log_q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: tuple[NDArray, NDArray, NDArray, NDArray],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> Fitted:
    """The protocol's loop for a peer: ``log_q(x, c)`` its log-density in standardized units."""
    x_train, c_train, x_val, c_val = data
    std = Standardized(x_train, c_train)
    xt, ct = std(x_train, c_train)
    xv, cv = std(x_val, c_val)
    opt = make_optimizer(flow.parameters(), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    batches: Iterator[torch.Tensor] = batch_indices(len(xt), batch_size, seed)
    best, best_step, best_state = math.inf, 0, None
    for step in range(1, steps + 1):
        b = next(batches)
        loss = -log_q(xt[b], ct[b]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % EVAL_EVERY == 0 or step == steps:
            with torch.no_grad():
                val = -log_q(xv, cv).mean().item()
            if val < best:
                best, best_step, best_state = val, step, copy.deepcopy(flow.state_dict())
    if best_state is not None:
        flow.load_state_dict(best_state)

    @torch.no_grad()
    def log_prob_data(x: NDArray, c: NDArray) -> NDArray:
        xs, cs = std(x, c)
        return log_q(xs, cs).double().numpy() - std.log_jacobian

    params = sum(p.numel() for p in flow.parameters() if p.requires_grad)
    return Fitted(log_prob_data, params, best_step)


def fit_zuko(
    kind: str, *data: NDArray, steps: int, batch_size: int, lr: float, seed: int
) -> Fitted:
    """zuko's conditional ``RealNVP`` or ``NSF`` (its defaults but the sizes), trained by
    ``train_peer``."""
    import zuko

    torch.manual_seed(seed)
    cls = {"zuko_realnvp": zuko.flows.RealNVP, "zuko_nsf": zuko.flows.NSF}[kind]
    flow = cls(features=2, context=2, transforms=LAYERS[kind], hidden_features=[HIDDEN, HIDDEN])
    return train_peer(flow, lambda x, c: flow(c).log_prob(x), data, steps, batch_size, lr, seed)


def fit_model(name: str, data: tuple[NDArray, ...], steps: int, seed: int) -> Fitted:
    if name.startswith("realnvp"):
        coupling = "affine" if name == "realnvp" else "spline"
        options = {"coupling": coupling, "context_affine": name == "realnvp_context_affine"}
        return fit_realnvp(*data, steps=steps, batch_size=BATCH, lr=LR, seed=seed, **options)
    return fit_zuko(name, *data, steps=steps, batch_size=BATCH, lr=LR, seed=seed)


MODELS = ["realnvp", "realnvp_spline", "realnvp_context_affine", "zuko_realnvp", "zuko_nsf"]


# -- running and reporting ---------------------------------------------------------------------


def run(models: list[str], seeds: list[int], steps: int, out: Path | None) -> None:
    data = datasets()
    x_test, c_test = data["test"]
    exact = -log_prob(x_test, c_test)
    train_val = (*data["train"], *data["val"])
    for seed in seeds:
        for name in models:
            start = time.perf_counter()
            fitted = fit_model(name, train_val, steps, seed)
            train_seconds = time.perf_counter() - start
            nll = -fitted(x_test, c_test)
            diff = nll - exact
            record = {
                "kind": "result",
                "model": name,
                "seed": seed,
                "steps": steps,
                "batch_size": BATCH,
                "lr": LR,
                "layers": LAYERS[name],
                "hidden": [HIDDEN, HIDDEN],
                "params": fitted.params,
                "best_step": fitted.best_step,
                "test_nll": float(nll.mean()),
                "exact_nll": float(exact.mean()),
                "gap": float(diff.mean()),
                "gap_se": float(diff.std(ddof=1) / math.sqrt(len(diff))),
                "n_test": len(diff),
                "train_seconds": train_seconds,
                "seconds": time.perf_counter() - start,
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "time": time.strftime("%Y-%m-%d %H:%M"),
                **versions("zuko", "numpy", "scipy"),
            }
            log(out, record)


def report(paths: list[str]) -> str:
    rows = read(paths)
    rows = [r for r in rows if r.get("kind") == "result"]
    lines = [
        "| model | seed | steps | params | test NLL | exact NLL | gap ± paired SE | best step "
        "| seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["steps"], r["model"], r["seed"])):
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['steps']} | {r['params']:,} | "
            f"{r['test_nll']:.4f} | {r['exact_nll']:.4f} | {r['gap']:+.4f} ± {r['gap_se']:.4f} | "
            f"{r['best_step']} | {r['seconds']:.0f} |"
        )
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["steps"]), []).append(r)
    if groups:
        lines += [
            "",
            "| model | steps | seeds | mean test NLL | mean gap | sd of gap over seeds "
            "| mean paired SE | mean seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (model, steps), rs in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0])):
            gaps = [r["gap"] for r in rs]
            sd = f"{statistics.stdev(gaps):.4f}" if len(gaps) > 1 else ""
            lines.append(
                f"| {model} | {steps} | {len(rs)} | "
                f"{statistics.mean(r['test_nll'] for r in rs):.4f} | "
                f"{statistics.mean(gaps):+.4f} | {sd} | "
                f"{statistics.mean(r['gap_se'] for r in rs):.4f} | "
                f"{statistics.mean(r['seconds'] for r in rs):.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {MODELS}")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="append one JSON line per model and seed")
    parser.add_argument("--report", nargs="+", metavar="JSONL", help="print the Markdown tables")
    parser.add_argument("--check", action="store_true", help="check the density and exit")
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
        return
    if args.check:
        for row in check():
            print(json.dumps(row), flush=True)
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {MODELS}")
    torch.set_num_threads(args.threads)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    run(models, args.seeds, args.steps, args.out)


if __name__ == "__main__":
    main()
