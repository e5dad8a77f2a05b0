"""sbibm's C2ST for many sample pairs at once: the same classifier fits, batched in torch.

``sbibm_tasks.c2st`` (sbibm 1.1.0's ``c2st``) fits one scikit-learn ``MLPClassifier`` per fold:
relu, two hidden layers of ``10 * dim``, adam (lr 1e-3, betas 0.9 and 0.999, eps 1e-8), L2
``alpha=1e-4``, batches of 200, a reshuffle every epoch, stopped when the epoch's training loss
has not fallen by ``tol=1e-4`` below its best for more than 10 epochs (``max_iter`` 10,000), all
in float32, seeded ``random_state=seed``; the score is the mean test accuracy over
``KFold(5, shuffle=True, random_state=seed)``. On two_moons each fit takes about 10 s, one numpy
call per layer per batch, so the 5 folds of the 10 observations of one estimator take about 8
minutes of one core: half of the whole benchmark.

``c2st_many`` runs those same fits, for every fold of every pair given, as one batch of torch
matrix products (``bmm`` over the models), with scikit-learn's arithmetic written out: its
weight initialisation (Glorot uniform, drawn from ``numpy.random.RandomState(seed)`` in its
order), its epoch shuffles (drawn from the same stream, as ``sklearn.utils.shuffle`` draws
them), its loss with the L2 term, its hand-written gradients, its Adam update (``lr_t * m /
(sqrt(v) + eps)``), its stopping rule and its 0.5 decision threshold; the folds are
scikit-learn's own ``KFold``. Every fold of every pair starts from the same weights and sees the
same batches, as each clone of sbibm's classifier does. What differs is only the order of
floating-point operations (torch's matrix products against numpy's), which rounds differently;
over thousands of steps two fits drift apart as two runs with different BLAS libraries would.
``python benchmarks/c2st_batched.py --check --out benchmarks/results/c2st_batched_check.jsonl``
compares the two on the same samples (``SBIBM_DIR`` as for ``sbibm_tasks.py``).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from sbibm_tasks import z_scored
from torch import Tensor

ALPHA, LR, BETA1, BETA2, EPS, TOL, NO_CHANGE, BATCH = 1e-4, 1e-3, 0.9, 0.999, 1e-8, 1e-4, 10, 200
MAX_ITER = 10_000  # sbibm's max_iter: epochs


@dataclass
class _Fits:
    """The classifiers of one group (same sizes), stacked along dim 0: their rows, weights and
    random streams. ``x_val`` is None unless early-stopped (``fast``)."""

    x: Tensor  # (M, n, d) training rows
    y: Tensor  # (M, n, 1) labels 0/1
    x_val: Tensor | None  # (M, v, d): fast's held-out tenth of the training rows
    y_val: Tensor | None
    x_test: Tensor  # (M, m, d): the fold's test rows
    y_test: Tensor
    params: list[Tensor]  # W1, W2, W3, b1, b2, b3 (sklearn's coefs_ then intercepts_)
    streams: list[np.random.RandomState]  # each classifier's random_state
    order: NDArray  # (M, n): each one's sample_idx, reshuffled every epoch

    def keep(self, rows: Tensor) -> _Fits:
        pick = rows.numpy()
        return _Fits(
            self.x[rows], self.y[rows],
            None if self.x_val is None else self.x_val[rows],
            None if self.y_val is None else self.y_val[rows],
            self.x_test[rows], self.y_test[rows], [p[rows] for p in self.params],
            [s for s, k in zip(self.streams, pick, strict=True) if k], self.order[pick],
        )  # fmt: skip


def c2st_many(
    pairs: Sequence[tuple[NDArray, NDArray]], seed: int = 1, n_folds: int = 5, fast: bool = False
) -> list[float]:
    """sbibm's ``c2st(a, b, seed, n_folds)`` (z-scored by ``a``) of every ``(a, b)`` pair;
    ``fast``: ``sbibm_tasks.c2st(..., fast=True)``, the classifier's early stopping on."""
    from sklearn.model_selection import KFold

    groups: dict[tuple[int, int, int], list[tuple[int, NDArray, NDArray, NDArray, NDArray]]] = {}
    for k, (a, b) in enumerate(pairs):
        x, y = z_scored(a, b)
        data = np.concatenate([x, y])
        target = np.concatenate([np.zeros(len(x)), np.ones(len(y))]).astype(np.float32)
        for train, test in KFold(n_folds, shuffle=True, random_state=seed).split(data):
            key = (len(train), len(test), data.shape[1])
            groups.setdefault(key, []).append((k, data, target, train, test))
    accuracy = np.zeros((len(pairs), n_folds))
    filled = np.zeros(len(pairs), dtype=int)
    for (_, _, d), members in groups.items():
        for (k, *_), score in zip(members, _train(_start(members, d, seed, fast)), strict=True):
            accuracy[k, filled[k]] = score
            filled[k] += 1
    return [float(s) for s in accuracy.mean(axis=1)]


def _start(members: list, d: int, seed: int, fast: bool) -> _Fits:
    """Every member's classifier as sklearn starts it: weights drawn from ``RandomState(seed)``
    in ``_init_coef``'s order, then (``fast``) its stratified validation split from the same
    stream, which each member then keeps drawing its epoch shuffles from."""
    from sklearn.model_selection import train_test_split

    rs = np.random.RandomState(seed)
    sizes = [d, 10 * d, 10 * d, 1]
    coefs, intercepts = [], []
    for fan_in, fan_out in itertools.pairwise(sizes):  # sklearn's _init_coef
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        coefs.append(rs.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32))
        intercepts.append(rs.uniform(-bound, bound, fan_out).astype(np.float32))
    rows, held, streams = [], [], []
    for _, _, target, train, _ in members:
        stream = copy.deepcopy(rs)
        if fast:  # _fit_stochastic's train_test_split of the binarized (n, 1) labels
            labels = target[train].astype(bool)[:, None]
            kept, val = train_test_split(train, random_state=stream, test_size=0.1, stratify=labels)
            rows.append(kept)
            held.append(val)
        else:
            rows.append(train)
        streams.append(stream)
    data_of = [m[1] for m in members]
    target_of = [m[2] for m in members]

    def stack(parts: list[NDArray], of: list[NDArray]) -> Tensor:
        return torch.from_numpy(np.stack([o[i] for o, i in zip(of, parts, strict=True)]))

    tests = [m[4] for m in members]
    return _Fits(
        x=stack(rows, data_of), y=stack(rows, target_of)[..., None],
        x_val=stack(held, data_of) if fast else None,
        y_val=stack(held, target_of)[..., None] if fast else None,
        x_test=stack(tests, data_of), y_test=stack(tests, target_of)[..., None],
        params=[torch.from_numpy(p).expand(len(members), *p.shape).clone()
                for p in coefs + intercepts],
        streams=streams, order=np.tile(np.arange(len(rows[0])), (len(members), 1)),
    )  # fmt: skip


def _train(fits: _Fits) -> list[float]:
    """Adam epochs until every classifier has stopped (or ``MAX_ITER``); each one's test
    accuracy when it stops, with its best weights when early-stopped, as sklearn restores them."""
    m, n = fits.x.shape[:2]
    adam = _Adam(fits.params)
    fast = fits.x_val is not None
    best = torch.full((m,), -math.inf if fast else math.inf, dtype=torch.float64)
    kept = [p.clone() for p in fits.params] if fast else None  # the best weights so far
    stalled = torch.zeros(m, dtype=torch.long)
    live = torch.arange(m)  # the classifiers still training (rows of fits' tensors)
    scores = [math.nan] * m
    sizes = torch.tensor([min(BATCH, n - i) for i in range(0, n, BATCH)], dtype=torch.float64)
    for epoch in range(MAX_ITER):
        for j, stream in enumerate(fits.streams):  # sklearn.utils.shuffle(sample_idx, stream)
            perm = np.arange(n)
            stream.shuffle(perm)
            fits.order[j] = fits.order[j][perm]
        rows = torch.from_numpy(fits.order)[..., None]
        x = torch.gather(fits.x, 1, rows.expand(-1, -1, fits.x.shape[2]))
        y = torch.gather(fits.y, 1, rows)
        losses = [
            adam.step(fits.params, x[:, i : i + BATCH], y[:, i : i + BATCH])
            for i in range(0, n, BATCH)
        ]
        if kept is not None:  # _update_no_improvement_count on the validation accuracy
            value = _accuracy(fits.params, fits.x_val, fits.y_val).double()  # type: ignore[arg-type]
            worse = value < best + TOL
            better = value > best
            for p, k in zip(fits.params, kept, strict=True):
                k[better] = p[better]
            best = torch.where(better, value, best)
        else:  # ... on the epoch's training loss
            value = (torch.stack(losses).double() * sizes[:, None]).sum(0) / n
            worse = value > best - TOL
            best = torch.minimum(best, value)
        stalled = torch.where(worse, stalled + 1, torch.zeros_like(stalled))
        done = (stalled > NO_CHANGE) | (epoch == MAX_ITER - 1)
        if bool(done.any()):
            final = [w[done] for w in (fits.params if kept is None else kept)]
            accuracy = _accuracy(final, fits.x_test[done], fits.y_test[done])
            for j, acc in zip(live[done].tolist(), accuracy.tolist(), strict=True):
                scores[j] = acc
            stay = ~done
            live, best, stalled = live[stay], best[stay], stalled[stay]
            kept = None if kept is None else [k[stay] for k in kept]
            fits = fits.keep(stay)
            adam.keep(stay)
        if len(live) == 0:
            break
    return scores


class _Adam:
    """sklearn's ``_backprop`` and ``AdamOptimizer`` for a stack of classifiers."""

    def __init__(self, params: list[Tensor]):
        self.moments = [torch.zeros_like(p) for p in params]
        self.squares = [torch.zeros_like(p) for p in params]
        self.t = 0

    def keep(self, rows: Tensor) -> None:
        self.moments = [t[rows] for t in self.moments]
        self.squares = [t[rows] for t in self.squares]

    def step(self, params: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
        """One batch for every classifier (updating ``params`` in place); returns each one's
        batch loss, the log loss plus ``alpha / 2 * sum(W^2) / batch``."""
        w1, w2, w3 = params[:3]
        size = x.shape[1]
        a1, a2, p = _forward(params, x)
        eps = torch.finfo(p.dtype).eps
        q = p.clamp(eps, 1 - eps)
        log_loss = -torch.log(torch.where(y > 0, q, 1 - q)).mean(dim=(1, 2))
        l2 = sum((w * w).sum(dim=(1, 2)) for w in (w1, w2, w3))
        loss = log_loss + 0.5 * ALPHA * l2 / size
        d3 = p - y
        d2 = torch.ops.aten.threshold_backward(d3 @ w3.transpose(1, 2), a2, 0)
        d1 = torch.ops.aten.threshold_backward(d2 @ w2.transpose(1, 2), a1, 0)
        grads = [
            torch.baddbmm(w1, x.transpose(1, 2), d1, beta=ALPHA).div_(size),
            torch.baddbmm(w2, a1.transpose(1, 2), d2, beta=ALPHA).div_(size),
            torch.baddbmm(w3, a2.transpose(1, 2), d3, beta=ALPHA).div_(size),
            d1.sum(1).div_(size),
            d2.sum(1).div_(size),
            d3.sum(1).div_(size),
        ]
        self.t += 1
        rate = LR * math.sqrt(1 - BETA2**self.t) / (1 - BETA1**self.t)
        torch._foreach_mul_(self.moments, BETA1)
        torch._foreach_add_(self.moments, grads, alpha=1 - BETA1)
        torch._foreach_mul_(self.squares, BETA2)
        torch._foreach_addcmul_(self.squares, grads, grads, value=1 - BETA2)
        denominators = torch._foreach_sqrt(self.squares)
        torch._foreach_add_(denominators, EPS)
        torch._foreach_addcdiv_(params, self.moments, denominators, value=-rate)
        return loss


def _forward(params: list[Tensor], x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each classifier's hidden activations and its probability of label 1 (relu, relu,
    logistic: sklearn's ``_forward_pass``)."""
    w1, w2, w3, b1, b2, b3 = params
    a1 = torch.relu(torch.baddbmm(b1[:, None], x, w1))
    a2 = torch.relu(torch.baddbmm(b2[:, None], a1, w2))
    return a1, a2, torch.sigmoid(torch.baddbmm(b3[:, None], a2, w3))


def _accuracy(params: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Each classifier's accuracy on its rows: 1 predicted where p > 0.5 (sklearn's
    ``LabelBinarizer`` threshold)."""
    p = _forward(params, x)[2]
    return ((p > 0.5).float() == y).float().mean(dim=(1, 2))


def check(tasks: list[str], scales: list[float], seeds: list[int], out: Path | None) -> None:
    """Both engines on the same pairs, with each task's default C2ST: each task's first
    reference posterior (5,000 draws) against its other 5,000 draws plus Gaussian noise of each
    scale (times the posterior's std), and scikit-learn again with other classifier seeds: the
    spread any difference between the engines should be read against."""
    from records import log, versions
    from sbi_npe import DEFAULT_C2ST
    from sbibm_tasks import c2st, reference_samples

    for task in tasks:
        fast = DEFAULT_C2ST[task] == "fast"
        ref = reference_samples(task, 1)
        rng = np.random.default_rng(0)
        half = len(ref) // 2
        a, b0 = ref[:half], ref[half:]
        std = ref.std(0)
        pairs = [(a, b0 + s * std * rng.standard_normal(b0.shape)) for s in scales]
        start = time.perf_counter()
        batched = c2st_many(pairs, fast=fast)
        batched_s = time.perf_counter() - start
        for s, (a_, b_), ours in zip(scales, pairs, batched, strict=True):
            start = time.perf_counter()
            sklearn = {seed: c2st(a_, b_, seed=seed, fast=fast) for seed in seeds}
            record = {
                "task": task,
                "method": DEFAULT_C2ST[task],
                "noise": s,
                "batched": ours,
                "sklearn_by_seed": sklearn,
                "batched_minus_sklearn": ours - sklearn[1],
                "sklearn_seconds": round(time.perf_counter() - start, 1),
                "batched_seconds_all_scales": round(batched_s, 1),
                "threads": torch.get_num_threads(),
                "versions": versions("scikit-learn", "numpy"),
            }
            log(out, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--tasks", nargs="+", default=["two_moons", "slcp", "gaussian_linear"])
    parser.add_argument("--scales", nargs="+", type=float, default=[0.0, 0.02, 0.05, 0.1])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2], help="1 is sbibm's")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.check:
        check(args.tasks, args.scales, args.seeds, args.out)


if __name__ == "__main__":
    main()
