"""Amortized neural posterior estimation on three sbibm tasks, scored by C2ST: realnvp's
conditional RealNVP beside zuko's NSF and MAF and nflows' MAF, all trained on the same
simulations with the same split, batches, optimizer and early stopping.

What it measures. For each task (``two_moons``, ``gaussian_linear``, ``slcp``; see
``sbibm_tasks.py``), budget N (``--budgets``, default 10,000) and seed, N pairs (theta, x) are
drawn from the prior and the simulator (numpy, seeded by (seed, task, N)); realnvp's ``split``
holds out 10% for validation (the same pairs for all). Each estimator learns q(theta | x) once
(amortized), then for each of sbibm's 10 observations x_o draws 10,000 theta from q(theta | x_o)
and is scored by C2ST against sbibm's 10,000 reference posterior samples (0.5 is perfect).
Also recorded: the test NLL -log q(theta | x) in theta's own units on 10,000 fresh pairs (the
exact posterior of gaussian_linear gives -0.79), calibration, parameters, steps and seconds.

The estimators (``--estimators``):
- ``realnvp_default``: ``realnvp.training.runs.fit_data(theta, ..., context_train=x, ...)``
  with no model option: the library's defaults for a conditional table of 9,000 (90,000) rows
  (``table_sizes(rows, theta_dim, conditional=True)``): a ``ContextAffine`` (an MLP of x
  shifting and scaling theta), then 8 rational-quadratic spline couplings (8 bins, tail bound
  5) with MLP conditioners of 2 hidden layers of 256, rolling masks for more than 2
  parameters; theta and x standardized in float64 inside the flow (``for_data``). 649k / 739k
  parameters (two_moons / slcp).
- ``realnvp_128``: the same at width 128 (``hidden_features=128``).
- ``realnvp``: the first runs' model, 8 affine couplings with MLP conditioners (2 hidden layers
  of 128), x fed to every conditioner, alternating masks, no ``ContextAffine``. 138k / 159k /
  149k parameters (two_moons / gaussian_linear / slcp).
- ``realnvp_spline``: the same with ``coupling="spline"`` (8 bins; everything else as
  ``realnvp``).
- ``zuko_nsf``: ``zuko.flows.NSF(features=theta_dim, context=x_dim, transforms=5,
  hidden_features=[50, 50])`` (8 bins; zuko's defaults otherwise): 26k / 77k / 46k parameters.
- ``zuko_maf``: ``zuko.flows.MAF(...)``, the same arguments (alternating orders): 15k / 23k /
  19k.
- ``nflows_maf``: sbi 0.21's ``build_maf`` (read from its source): five
  ``MaskedAffineAutoregressiveTransform(hidden_features=50, num_blocks=2,
  use_residual_blocks=False, random_mask=False, activation=tanh)``, each followed by a
  ``RandomPermutation`` (sbi 0.21 uses random, not reversed, permutations: in 2-D some are the
  identity), over a ``StandardNormal`` base, conditioned on x: 28k / 36k / 32k.
The peers see theta and x z-scored with the training pairs' mean and std (float64 statistics,
ddof 0 as realnvp's; sbi uses ddof 1, which is immaterial at 9,000 rows), as float32 tensors;
their log-densities are moved back to theta's units (minus sum log std_theta). (sbi's own zuko
builders expand ``hidden_features=50`` to ``[50] * num_transforms``, five hidden layers per
transform; here both zuko flows have the two hidden layers of 50 given above.)

The protocol (``Protocol``; the same for every estimator): Adam (realnvp's ``make_optimizer``,
fused), constant learning rate 5e-4 (sbi's), batches of 512 from
``realnvp.training.loop.batch_indices`` (the same batches for every estimator: a fresh
permutation per epoch, the last short batch dropped, so 17 steps per epoch of 9,000 pairs),
gradient norm clipped at 5 (sbi's ``clip_max_norm``), the validation NLL after every epoch,
stopped after 20 epochs without a better one (sbi's ``stop_after_epochs``) or after 500 epochs
(8,500 steps; sbi has no cap, and none of the smoke runs reached it), the best-validation
weights restored. realnvp trains through ``fit_data`` with the equivalent
``TrainConfig(steps=500 * 17, batch_size=512, lr=5e-4, schedule="constant", grad_clip=5.0,
eval_every=17, patience=20)``; the peers through ``train_peer``, one small loop that takes
exactly those steps (``--check-loop``: on a small flow it ends with realnvp's weights bit for
bit, moving average, weight decay and schedule included). Two recipes: ``sbi`` (the above:
sbi's) and, with ``--ema 0.995 --weight-decay 3e-3``, the library's table regularization
given to every estimator alike: the weights' moving average (decay warmed up as ``min(ema,
(1 + t) / (10 + t))``) is what is validated, early-stopped and kept, and Adam has L2 weight
decay (``make_optimizer``). A third adds ``--schedule cosine --max-epochs 300``: the
learning rate annealed from 5e-4 to 0 over 300 epochs (``CosineAnnealingLR``, stepped every
step, as realnvp's ``TrainConfig(schedule="cosine")``), sbi's early stopping kept; annealed,
two_moons no longer depends on where a noisy 1,000-pair validation set happens to stop
training (with ``--patience 300``, no early stopping, the table came out the same and took
32.5 instead of 21.1 minutes). ``train_peer`` steps the same schedule. Nobody gets
``torch.compile``; all compute in float32, except that realnvp standardizes theta and x in
float64 before its float32 layers. Advantages, plainly:
realnvp has 2-29x the peers' parameters, and the shared batch size and learning rate were
chosen by trying realnvp (below), not the peers (checked on two_moons at batch 256 and 512, lr
5e-4: the zuko flows' test NLL within 0.01 nats, nflows_maf 0.09 nats better at 512, where its
batch-256 run had hit a 200-epoch cap); the peers have architectures their authors tuned for
this use (autoregressive transforms; splines for NSF), and none of their settings were tried.

How realnvp's setting was picked (two_moons, 10,000 simulations, seed 0, test NLL on 10,000
fresh pairs, lower is better, standard error ~0.009; training one estimator in one thread):
8 layers x 128, batch 256, lr 5e-4: -3.311 (stopped at epoch 83); batch 256, lr 1e-3: -3.263;
batch 512, lr 1e-3: -3.165; batch 512, lr 5e-4: -3.375 with a 200-epoch cap (still improving),
-3.412 with the 500-epoch cap (stopped at 243); 10 layers, batch 256, lr 5e-4: -3.278; 64 hidden,
batch 256, lr 5e-4: -3.203. Picked: the library's model defaults (8 layers, 128 hidden, 2
hidden layers) with batch 512 (the library's default) and lr 5e-4 (sbi's): the best test NLL,
and the cheapest per epoch. The same setting is used for every task (no per-task tuning). On
slcp it overfits (training NLL 5.7 vs validation 7.0; 64 hidden gave 6.82 vs 6.92 test NLL,
still far behind the peers' 5.4-5.9), and on gaussian_linear every estimator overfits within
tens of epochs (realnvp's best epoch was 5).

Sampling. For the box priors (two_moons, slcp) draws outside the prior are rejected and redrawn
until 10,000 are kept (sbi's leakage correction), the same for all; the acceptance rate is
recorded (smoke runs: ~1.0 on two_moons, 0.4-0.7 on slcp).

C2ST. ``exact`` is sbibm's ``c2st`` (``sbibm_tasks.c2st``, reproduced by ``c2st_score``):
z-scored, an MLP with 2 hidden layers of 10 * dim trained by adam until its training loss
stalls (max_iter 10,000), 5-fold cross-validated accuracy, classifier seed 1. ``fast`` is the
same with sklearn's early stopping on (``early_stopping=True, validation_fraction=0.1,
n_iter_no_change=10``). Defaults (``--c2st auto``): two_moons ``exact``; slcp and
gaussian_linear ``fast``. ``--c2st-engine batched`` (the default) fits those same classifiers for
all 10 observations at once (``c2st_batched.py``: scikit-learn's initialisation, shuffles,
gradients, Adam and stopping rules written out as batched torch products; the statistic is the
same, only the rounding of the products differs); ``sklearn`` fits them one by one, with
``--threads`` 2 or more its 5 folds in that many worker processes (``cross_val_score(n_jobs)``).
``--check-engine`` scores the first ``--check-observations`` with scikit-learn too. On 10
two_moons observations the batched exact C2ST took 54 s of one core, against 42-62 s per
observation by scikit-learn.
The check (``--check-c2st``: the other C2ST too on the first ``--check-observations`` of each
run, on the same samples; 12 cases, smoke runs, one thread, a shared machine):
- 2-D (two_moons, 8 cases, two observations per estimator): fast - exact from +0.003 to
  -0.071, mean -0.032; the worse the estimate the more fast understates it (exact 0.61-0.64:
  -0.015 to -0.071), enough to reorder the estimators. exact took 23-106 s, fast 5-10 s.
- 5-D (slcp, 2 cases): -0.008 and -0.011 (exact 0.94-0.96); exact 67-74 s, fast 24 s.
- 10-D (gaussian_linear, 2 cases): +0.055 and +0.054 (exact 0.530, fast 0.584): sbibm's
  classifier trains for hundreds of epochs and overfits its folds, so it scores near chance;
  the early-stopped one finds the difference. exact took 250-280 s, fast 9-15 s.
So slcp's fast scores are close to sbibm's; two_moons must stay exact to rank estimators;
gaussian_linear's fast scores read ~0.05 higher than sbibm's C2ST of the same samples (so
higher than the paper's scale), but exact costs ~4.5 min per observation in 10-D.

Calibration. For ``--coverage-draws`` (200) fresh (theta*, x*) pairs, ``--coverage-samples``
(1,000) draws from q(theta | x*) (those inside the prior): the rank of theta* is the fraction
of draws with a higher log q. theta* is in the alpha highest-density region iff its rank <=
alpha, so the empirical coverage mean(rank <= alpha) against alpha is the diagonal for a
calibrated q (below it: overconfident). ``calibration_error`` is the mean |coverage - alpha|
over alpha = 0.05, ..., 0.95; ``--figure`` plots the curves, one axis per task.

Output: one JSON line per (task, budget, estimator, seed) appended to ``--out`` (C2ST per
observation with mean and std (ddof 1) over them, the check, acceptance rates, training steps,
epochs and seconds, sampling and C2ST seconds, CPU seconds, test NLL, coverage ranks,
parameters, the protocol, versions of torch, zuko, nflows, realnvp, scikit-learn, numpy).
``--report`` prints Markdown tables per task and budget beside the sbibm paper's NPE (NPE-NSF,
trained per observation, so an anchor rather than a like-for-like figure) and names the best
estimator by mean C2ST (with the paired difference to the runner-up); the last record of each
(task, budget, estimator, seed) wins.

Usage (zuko and nflows from ``pip install torch==2.13.0 -e ".[bench]"``; sbibm's files from the
wheel, see ``sbibm_tasks.py``; run nothing else at the same time). The default and the three
peers of the README's table (its other columns are ablations), in one command on 2 cores (two
one-thread processes):
    SBIBM_DIR=/path/to/unzipped/sbibm-wheel python benchmarks/sbi_npe.py --jobs 2 \
        --ema 0.995 --weight-decay 3e-3 --schedule cosine --max-epochs 300 \
        --estimators realnvp_default zuko_nsf zuko_maf nflows_maf
    python benchmarks/sbi_npe_summary.py benchmarks/results/sbi_npe.jsonl
    python benchmarks/sbi_npe.py --report benchmarks/results/sbi_npe.jsonl \
        --figure benchmarks/results/sbi_npe_coverage.png
    SBIBM_DIR=... python benchmarks/sbi_npe.py --tasks two_moons --observations 2 --check-c2st \
        --out /tmp/check.jsonl   # the fast-vs-exact check on two_moons

Time. Each record holds its run's seconds, measured in one thread while one other such run
shared the 2-core machine (``seconds``, and ``cpu_seconds`` per part); a ``--jobs`` command
also records its wall clock (``"kind": "jobs"``; ``sbi_npe_summary.py`` lists them). Before
the batched C2ST, the records projected 57 minutes for the command above (half of it sbibm's
C2ST, fitted one classifier at a time). Its first timed run (2026-11-29) took 54.9 minutes:
the C2ST had fallen to under a minute per (task, estimator), but realnvp_default's two_moons
training took 3,150 s instead of ~700, its steps slowing from 62 to 510 ms as weights decayed
into the denormal range (fixed: training flushes denormals, ``realnvp.training.loop.
flushed_denormals``, the peers' loop too). The rerun's wall clock is the last ``jobs`` record.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from c2st_batched import c2st_many
from numpy.typing import NDArray
from records import log, versions
from sbibm_tasks import (
    NUM_OBSERVATIONS,
    TASKS,
    BoxUniformTask,
    Task,
    c2st,
    observation,
    reference_samples,
)
from torch import Tensor, nn

from realnvp.config import TrainConfig
from realnvp.training.loop import batch_indices, flushed_denormals, make_optimizer
from realnvp.training.runs import fit_data, new_flow, split

ESTIMATORS = (
    "realnvp_default",
    "realnvp_128",
    "realnvp",
    "realnvp_spline",
    "zuko_nsf",
    "zuko_maf",
    "nflows_maf",
)

#: the published NPE (NPE-NSF, trained per observation) C2ST, mean and std over the 10
#: observations: github.com/sbi-benchmark/results, benchmarking_sbi/results/main_paper.csv at
#: commit 741183cdece7077453efbedac0fad7e74afa10e5 (Lueckmann et al. 2021)
PAPER_NPE: dict[tuple[str, int], tuple[float, float]] = {
    ("two_moons", 10_000): (0.606, 0.039),
    ("two_moons", 100_000): (0.542, 0.024),
    ("gaussian_linear", 10_000): (0.552, 0.032),
    ("gaussian_linear", 100_000): (0.506, 0.004),
    ("slcp", 10_000): (0.901, 0.047),
    ("slcp", 100_000): (0.831, 0.052),
}

#: how the report names a record's C2ST engine (records before the batched engine had none)
ENGINE_NOTE = {"sklearn": "", "batched": " (batched fits)"}

#: the C2ST each task uses by default (``--c2st auto``): see the module docstring for why
DEFAULT_C2ST = {"two_moons": "exact", "gaussian_linear": "fast", "slcp": "fast"}

#: ``realnvp``: the affine model of the first runs, one setting for every task (see the module
#: docstring for how it was picked), every option given so it stays that model
REALNVP_MODEL: dict[str, Any] = {
    "num_layers": 8,
    "hidden_features": 128,
    "num_hidden_layers": 2,
    "coupling": "affine",
    "masks": "alternate",
    "context_affine": False,
}
#: the model options a record shows (what the library built)
MODEL_KEYS = (
    "num_layers",
    "hidden_features",
    "num_hidden_layers",
    "coupling",
    "masks",
    "context_affine",
    "bins",
    "tail_bound",
)
#: realnvp's estimators, by name, and the model options each gives ``fit_data``:
#: ``realnvp_default`` none (the library's defaults for a conditional table of this size,
#: ``table_sizes(rows, theta_dim, conditional=True)``), ``realnvp_128`` those at width 128,
#: ``realnvp`` the first runs' affine model, ``realnvp_spline`` it with spline couplings
REALNVP_MODELS: dict[str, dict[str, Any]] = {
    "realnvp_default": {},
    "realnvp_128": {"hidden_features": 128},
    "realnvp": REALNVP_MODEL,
    "realnvp_spline": {**REALNVP_MODEL, "coupling": "spline"},
}

#: samples drawn from each posterior estimate, as in sbibm
NUM_SAMPLES = 10_000
#: the classifier seed of every C2ST (sbibm's default, used for the paper)
C2ST_SEED = 1
#: rows per no-grad batch when scoring or sampling in bulk
CHUNK = 65_536


@dataclass(frozen=True)
class Protocol:
    """How every estimator trains: the same for all four.

    Adam with a constant learning rate on mini-batches of ``batch_size`` (each epoch a fresh
    permutation of the training pairs, the last short batch dropped:
    ``realnvp.training.loop.batch_indices``), the gradient norm clipped at ``grad_clip`` (sbi's
    ``clip_max_norm``), the validation NLL measured after every epoch, training stopped after
    ``patience`` epochs without a better one or after ``max_epochs``, the best weights restored.
    """

    batch_size: int = 512
    lr: float = 5e-4
    max_epochs: int = 500
    patience: int = 20
    val_fraction: float = 0.1
    grad_clip: float | None = 5.0
    #: the decay of the weights' moving average that is validated and kept (0: none, sbi's
    #: recipe; realnvp's ``TrainConfig.ema``, with its warm-up ``(1 + t) / (10 + t)``)
    ema: float = 0.0
    #: Adam's L2 weight decay (0: none, sbi's recipe; realnvp's ``TrainConfig.weight_decay``)
    weight_decay: float = 0.0
    #: the learning rate's schedule: "constant" (sbi's) or "cosine", annealed to 0 over
    #: ``max_epochs`` epochs (realnvp's ``TrainConfig.schedule``, stepped once per step)
    schedule: str = "constant"


@dataclass
class TrainInfo:
    """What a training run did: steps and epochs taken, the epoch of the best validation NLL,
    that NLL (nats per pair, in theta's own units) and the wall-clock seconds (building the
    model included)."""

    steps: int
    epochs: int
    best_epoch: int
    best_val_nll: float
    stopped_early: bool
    seconds: float = 0.0


# -- the estimators ----------------------------------------------------------------------------
class Estimator(ABC):
    """A conditional density q(theta | x), trained on (theta, x) pairs in float64 numpy."""

    name: ClassVar[str] = ""

    def __init__(self, theta_dim: int, x_dim: int):
        self.theta_dim, self.x_dim = theta_dim, x_dim

    @abstractmethod
    def fit(
        self,
        theta_train: NDArray,
        x_train: NDArray,
        theta_val: NDArray,
        x_val: NDArray,
        protocol: Protocol,
        seed: int,
    ) -> TrainInfo:
        """Train on the pairs, with early stopping on the validation pairs."""

    @abstractmethod
    def _sample(self, n: int, x: NDArray) -> NDArray:
        """``n`` draws of theta for each row of ``x`` (B, x_dim): (n, B, theta_dim)."""

    @abstractmethod
    def _log_prob(self, theta: NDArray, x: NDArray) -> NDArray:
        """log q(theta_i | x_i) in theta's own units, (N,)."""

    @abstractmethod
    def modules(self) -> list[nn.Module]:
        """The trained modules (for the parameter count)."""

    @property
    def num_parameters(self) -> int:
        """Trainable parameters."""
        return sum(p.numel() for m in self.modules() for p in m.parameters() if p.requires_grad)

    @torch.no_grad()
    def sample(self, n: int, x: NDArray) -> NDArray:
        """``n`` draws of theta for each row of ``x`` (B, x_dim): (n, B, theta_dim) float64."""
        per = max(1, CHUNK // max(1, len(x)))
        return np.concatenate([self._sample(min(per, n - i), x) for i in range(0, n, per)])

    @torch.no_grad()
    def log_prob(self, theta: NDArray, x: NDArray) -> NDArray:
        """log q(theta_i | x_i), (N,) float64, in chunks."""
        return np.concatenate(
            [
                self._log_prob(theta[i : i + CHUNK], x[i : i + CHUNK])
                for i in range(0, len(x), CHUNK)
            ]
        )


class RealNVPEstimator(Estimator):
    """realnvp's conditional RealNVP with the model options ``model`` (the library's defaults
    for the rest), trained by ``fit_data`` (its own loop and float64 standardization of theta
    and x)."""

    def __init__(self, theta_dim: int, x_dim: int, model: dict[str, Any]):
        super().__init__(theta_dim, x_dim)
        self.model = dict(model)
        self.flow: Any = None

    def fit(self, theta_train, x_train, theta_val, x_val, protocol, seed) -> TrainInfo:
        per_epoch = len(theta_train) // min(protocol.batch_size, len(theta_train))
        config = TrainConfig(
            steps=protocol.max_epochs * per_epoch,
            batch_size=protocol.batch_size,
            lr=protocol.lr,
            schedule=protocol.schedule,
            grad_clip=protocol.grad_clip,
            eval_every=per_epoch,
            patience=protocol.patience,
            seed=seed,
            ema=protocol.ema,
            weight_decay=protocol.weight_decay,
        )
        self.flow, history = fit_data(
            theta_train,
            theta_val,
            self.model,
            config,
            seed=seed,
            device="cpu",
            context_train=x_train,
            context_val=x_val,
        )
        config = self.flow.config
        self.model = {k: config[k] for k in MODEL_KEYS if k in config}  # what it built
        return TrainInfo(
            steps=history.step[-1],
            epochs=len(history.step),
            best_epoch=history.best_step // per_epoch,
            best_val_nll=history.best_val_nll,
            stopped_early=history.stopped_early,
        )

    def _sample(self, n: int, x: NDArray) -> NDArray:
        return self.flow.to_data(self.flow.sample(n, self.flow.as_context(x)))

    def _log_prob(self, theta: NDArray, x: NDArray) -> NDArray:
        lp = self.flow.log_prob(self.flow.as_input(theta), self.flow.as_context(x))
        return lp.double().numpy()

    def modules(self) -> list[nn.Module]:
        return [self.flow]


class PeerEstimator(Estimator):
    """A peer library's flow on theta and x z-scored with the training pairs' mean and std
    (float64 statistics, ddof 0, as ``RealNVP.for_data``; float32 tensors), trained by
    ``train_peer``. Its log-densities are moved back to theta's units: log q(theta | x) =
    log q_z(z | x_z) - sum(log std_theta)."""

    def __init__(self, theta_dim: int, x_dim: int):
        super().__init__(theta_dim, x_dim)
        self.net: nn.Module | None = None

    @abstractmethod
    def build(self) -> nn.Module:
        """The untrained flow on standardized theta (features) given standardized x."""

    @abstractmethod
    def log_prob_z(self, t: Tensor, c: Tensor) -> Tensor:
        """log q_z(t_i | c_i) in standardized units, (N,)."""

    @abstractmethod
    def sample_z(self, n: int, c: Tensor) -> Tensor:
        """``n`` standardized draws for each row of ``c`` (B, x_dim): (n, B, theta_dim)."""

    def _theta_z(self, theta: NDArray) -> Tensor:
        return torch.as_tensor((theta - self.t_mean) / self.t_std, dtype=torch.float32)

    def _x_z(self, x: NDArray) -> Tensor:
        return torch.as_tensor((x - self.x_mean) / self.x_std, dtype=torch.float32)

    def fit(self, theta_train, x_train, theta_val, x_val, protocol, seed) -> TrainInfo:
        self.t_mean, self.t_std = _moments(theta_train)
        self.x_mean, self.x_std = _moments(x_train)
        self.log_jacobian = float(np.log(self.t_std).sum())
        torch.manual_seed(seed)
        self.net = self.build()
        with flushed_denormals():  # as realnvp's Trainer trains: the same for every library
            info = train_peer(
                self.net,
                self.log_prob_z,
                (self._theta_z(theta_train), self._x_z(x_train)),
                (self._theta_z(theta_val), self._x_z(x_val)),
                protocol,
                seed,
            )
        info.best_val_nll += self.log_jacobian  # in theta's units, as realnvp reports it
        self.net.eval()
        return info

    def _sample(self, n: int, x: NDArray) -> NDArray:
        z = self.sample_z(n, self._x_z(x)).double().numpy()
        return z * self.t_std + self.t_mean

    def _log_prob(self, theta: NDArray, x: NDArray) -> NDArray:
        lp = self.log_prob_z(self._theta_z(theta), self._x_z(x)).double().numpy()
        return lp - self.log_jacobian

    def modules(self) -> list[nn.Module]:
        return [] if self.net is None else [self.net]


class ZukoEstimator(PeerEstimator):
    """``zuko.flows.<kind>(features=theta_dim, context=x_dim, transforms=5,
    hidden_features=[50, 50])``, its other arguments zuko's defaults."""

    kind: ClassVar[str] = ""

    def build(self) -> nn.Module:
        import zuko

        cls = getattr(zuko.flows, self.kind)
        return cls(
            features=self.theta_dim, context=self.x_dim, transforms=5, hidden_features=[50, 50]
        )

    def log_prob_z(self, t: Tensor, c: Tensor) -> Tensor:
        return self.net(c).log_prob(t)

    def sample_z(self, n: int, c: Tensor) -> Tensor:
        return self.net(c).sample((n,))


class ZukoNSF(ZukoEstimator):
    name = "zuko_nsf"
    kind = "NSF"


class ZukoMAF(ZukoEstimator):
    name = "zuko_maf"
    kind = "MAF"


class NflowsMAF(PeerEstimator):
    """nflows' MAF as sbi 0.21's ``build_maf`` makes it (``sbi/neural_nets/flow.py``): five
    blocks of ``MaskedAffineAutoregressiveTransform(hidden_features=50, num_blocks=2,
    use_residual_blocks=False, random_mask=False, activation=tanh)`` each followed by a
    ``RandomPermutation``, over a ``StandardNormal`` base, conditioned on x (sbi's z-scoring is
    done outside, as for zuko)."""

    name = "nflows_maf"

    def build(self) -> nn.Module:
        from nflows.distributions.normal import StandardNormal
        from nflows.flows.base import Flow
        from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
        from nflows.transforms.base import CompositeTransform
        from nflows.transforms.permutations import RandomPermutation

        layers: list[nn.Module] = []
        for _ in range(5):
            layers.append(
                MaskedAffineAutoregressiveTransform(
                    features=self.theta_dim,
                    hidden_features=50,
                    context_features=self.x_dim,
                    num_blocks=2,
                    use_residual_blocks=False,
                    random_mask=False,
                    activation=torch.tanh,
                    dropout_probability=0.0,
                    use_batch_norm=False,
                )
            )
            layers.append(RandomPermutation(features=self.theta_dim))
        return Flow(CompositeTransform(layers), StandardNormal((self.theta_dim,)))

    def log_prob_z(self, t: Tensor, c: Tensor) -> Tensor:
        return self.net.log_prob(t, context=c)

    def sample_z(self, n: int, c: Tensor) -> Tensor:
        return self.net.sample(n, context=c).transpose(0, 1)  # nflows: (B, n, D)


#: the peers' estimators, by name
PEER_CLASSES: dict[str, type[Estimator]] = {c.name: c for c in (ZukoNSF, ZukoMAF, NflowsMAF)}


def _moments(a: NDArray) -> tuple[NDArray, NDArray]:
    """Each column's mean and std (ddof 0) in float64, a constant column getting std 1."""
    std = a.std(0)
    return a.mean(0), np.where(std > 0, std, 1.0)


def _swap(params: list[Tensor], weights: list[Tensor] | None) -> list[Tensor] | None:
    """Put ``weights`` into ``params`` (nothing if None); returns the weights they held."""
    if weights is None:
        return None
    held = [p.detach().clone() for p in params]
    with torch.no_grad():
        torch._foreach_copy_(params, weights)
    return held


def train_peer(
    net: nn.Module,
    log_prob: Callable[[Tensor, Tensor], Tensor],
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    protocol: Protocol,
    seed: int,
) -> TrainInfo:
    """The peers' training loop, the same steps as realnvp's ``Trainer`` takes under the
    equivalent ``TrainConfig``: the same batches (``batch_indices`` from ``seed``), the same
    Adam (``make_optimizer``), the gradient norm clipped, the validation NLL after each epoch,
    ``patience`` epochs without improvement to stop, the best weights restored."""
    (t_train, c_train), (t_val, c_val) = train, val
    n = len(t_train)
    per_epoch = n // min(protocol.batch_size, n)
    batches: Iterator[Tensor] = batch_indices(n, protocol.batch_size, seed)
    params = list(net.parameters())
    opt = make_optimizer(params, protocol.lr, protocol.weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, protocol.max_epochs * per_epoch)
        if protocol.schedule == "cosine"
        else None
    )
    # the moving average of the weights, as realnvp's Trainer keeps it (protocol.ema)
    average = [p.detach().clone() for p in params] if protocol.ema else None
    best, best_epoch, best_state, bad, epoch, step = math.inf, 0, None, 0, 0, 0
    start = time.perf_counter()
    net.train()
    while epoch < protocol.max_epochs and bad < protocol.patience:
        for _ in range(per_epoch):
            b = next(batches)
            loss = -log_prob(t_train[b], c_train[b]).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the training loss became {loss.item()}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if protocol.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, protocol.grad_clip)
            opt.step()
            if scheduler is not None:
                scheduler.step()
            if average is not None:
                decay = min(protocol.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(average, params, 1 - decay)
            step += 1
        epoch += 1
        net.eval()
        live = _swap(params, average)
        with torch.no_grad():
            val_nll = -log_prob(t_val, c_val).mean().item()
        if val_nll < best:
            best, best_epoch, bad = val_nll, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            bad += 1
        _swap(params, live)
        net.train()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return TrainInfo(
        steps=epoch * per_epoch,
        epochs=epoch,
        best_epoch=best_epoch,
        best_val_nll=best,
        stopped_early=bad >= protocol.patience,
        seconds=time.perf_counter() - start,
    )


# -- sampling, C2ST, calibration ---------------------------------------------------------------
def sample_posterior(
    est: Estimator, task: Task, x_o: NDArray, n: int, max_draws: int = 100 * NUM_SAMPLES
) -> tuple[NDArray, float]:
    """``n`` draws from q(theta | x_o); for a box prior the draws outside it are rejected and
    redrawn (sbi's leakage correction). Returns the draws and the acceptance rate; fewer than
    ``n`` draws if ``max_draws`` ran out first."""
    x = np.asarray(x_o, dtype=np.float64).reshape(1, -1)
    if not isinstance(task, BoxUniformTask):
        return est.sample(n, x)[:, 0], 1.0
    kept: list[NDArray] = []
    accepted = drawn = 0
    rate = 1.0
    while accepted < n and drawn < max_draws:
        m = min(max_draws - drawn, max(1000, math.ceil(1.2 * (n - accepted) / max(rate, 0.01))))
        draws = est.sample(m, x)[:, 0]
        inside = draws[task.in_support(draws)]
        kept.append(inside)
        drawn += m
        accepted += len(inside)
        rate = max(accepted, 1) / drawn
    return np.concatenate(kept)[:n], accepted / drawn


def c2st_score(
    a: NDArray,
    b: NDArray,
    fast: bool = False,
    seed: int = C2ST_SEED,
    n_folds: int = 5,
    n_jobs: int = 1,
) -> float:
    """sbibm's C2ST (``sbibm_tasks.c2st``, ``a`` the reference samples), early-stopped when
    ``fast``, its folds in ``n_jobs`` processes."""
    return c2st(a, b, seed, n_folds, fast=fast, n_jobs=n_jobs)


def c2st_method(method: str, ref: NDArray, draws: NDArray, n_jobs: int = 1) -> float:
    """The C2ST ``method`` (``exact``: sbibm's; ``fast``: with early stopping) of the reference
    samples against an estimate's."""
    return c2st_score(ref, draws, fast=method == "fast", n_jobs=n_jobs)


def score_observations(
    method: str, engine: str, refs: list[NDArray], draws: list[NDArray], n_jobs: int = 1
) -> tuple[list[float], list[float], float]:
    """The C2ST ``method`` of each observation's reference samples against its draws, the
    seconds of each and the CPU seconds of all. ``engine`` ``sklearn`` fits sbibm's classifiers
    one by one; ``batched`` (``c2st_batched``) fits the same classifiers for all observations
    at once, and each observation is given an equal share of the seconds."""
    if engine == "batched":
        pairs = list(zip(refs, draws, strict=True))
        scores, s = timed(lambda: c2st_many(pairs, seed=C2ST_SEED, fast=method == "fast"))
        return scores, [s / len(refs)] * len(refs), CPU_SECONDS[-1]
    scores, seconds, cpu = [], [], 0.0
    for ref, drawn in zip(refs, draws, strict=True):
        score, s = timed(partial(c2st_method, method, ref, drawn, n_jobs))
        scores.append(score)
        seconds.append(s)
        cpu += CPU_SECONDS[-1]
    return scores, seconds, cpu


def c2st_checks(
    method: str, engine: str, refs: dict[int, NDArray], draws: list[NDArray],
    scores: list[float], seconds: list[float], args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """On the first ``--check-observations``: the other C2ST method by scikit-learn
    (``--check-c2st``), and the same method by scikit-learn when the scores came from the
    batched engine (``--check-engine``)."""
    methods, engines = [], []
    cases = zip(refs, refs.values(), draws, scores, seconds, strict=True)
    for i, ref, drawn, score, s in list(cases)[: args.check_observations]:
        if args.check_c2st:
            other = "fast" if method == "exact" else "exact"
            score2, s2 = timed(partial(c2st_method, other, ref, drawn, args.threads))
            pair = {method: score, other: score2, f"{method}_s": s, f"{other}_s": s2}
            methods.append({"obs": i, **pair, "fast_minus_exact": pair["fast"] - pair["exact"]})
        if args.check_engine and engine == "batched":
            again, s2 = timed(partial(c2st_method, method, ref, drawn, args.threads))
            engines.append(
                {"obs": i, "method": method, "batched": score, "sklearn": again,
                 "sklearn_s": s2, "batched_minus_sklearn": score - again}
            )  # fmt: skip
    return methods, engines


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall-clock seconds; the process's CPU seconds go to ``CPU_SECONDS``."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    CPU_SECONDS.append(time.process_time() - cpu)
    return out, time.perf_counter() - start


#: the CPU seconds of each ``timed`` call, latest last (on a shared machine, with one thread,
#: a better measure of the work than the wall clock)
CPU_SECONDS: list[float] = []


def coverage_ranks(
    est: Estimator, task: Task, draws: int, samples: int, rng: np.random.Generator
) -> NDArray:
    """Highest-density ranks of ``draws`` fresh (theta*, x*) pairs: for each, the fraction of
    ``samples`` draws from q(theta | x*) (those inside the prior's support: the same rejection
    as ``sample_posterior``) with a higher log q than theta*. theta* lies in the alpha
    highest-density region iff its rank is <= alpha, so for a calibrated q the ranks are
    uniform and the coverage ``mean(rank <= alpha)`` is alpha."""
    theta_star = task.prior_sample(draws, rng)
    x_star = task.simulate(theta_star, rng)
    thetas = est.sample(samples, x_star)  # (S, M, D)
    xs = np.broadcast_to(x_star, (*thetas.shape[:2], task.x_dim))
    lp = est.log_prob(thetas.reshape(-1, task.theta_dim), xs.reshape(-1, task.x_dim))
    lp = lp.reshape(thetas.shape[:2])
    lp_star = est.log_prob(theta_star, x_star)
    inside = task.in_support(thetas.reshape(-1, task.theta_dim)).reshape(thetas.shape[:2])
    higher = ((lp > lp_star) & inside).sum(0)
    return higher / np.maximum(inside.sum(0), 1)


def coverage_curve(ranks: NDArray, levels: NDArray) -> NDArray:
    """Empirical coverage at each nominal level: the fraction of ranks <= level."""
    return (np.asarray(ranks)[None, :] <= levels[:, None]).mean(1)


def calibration_error(ranks: NDArray) -> float:
    """Mean |coverage - nominal| over the levels 0.05, 0.10, ..., 0.95."""
    levels = np.linspace(0.05, 0.95, 19)
    return float(np.abs(coverage_curve(ranks, levels) - levels).mean())


# -- the benchmark -----------------------------------------------------------------------------
def task_rng(task: str, seed: int, budget: int, stream: int) -> np.random.Generator:
    """The numpy generator of one stream of one (task, seed, budget): 0 simulations for
    training, 1 the test set, 2 the calibration pairs."""
    return np.random.default_rng([seed, zlib.crc32(task.encode()), budget, stream])


def simulations(task: Task, n: int, rng: np.random.Generator) -> tuple[NDArray, NDArray]:
    """``n`` pairs (theta, x) from the prior and the simulator."""
    theta = task.prior_sample(n, rng)
    return theta, task.simulate(theta, rng)


def run_one(
    task: Task,
    budget: int,
    name: str,
    seed: int,
    data: dict[str, tuple[NDArray, NDArray]],
    refs: dict[int, NDArray],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Train one estimator on one task's simulations, then score it: C2ST on each observation,
    test NLL, calibration. Returns the JSON record."""
    protocol: Protocol = args.protocol
    theta_tr, x_tr = data["train"]
    theta_va, x_va = data["val"]
    est = (
        RealNVPEstimator(
            task.theta_dim, task.x_dim, REALNVP_MODELS[name] if args.model is None else args.model
        )
        if name in REALNVP_MODELS
        else PEER_CLASSES[name](task.theta_dim, task.x_dim)
    )
    info, train_s = timed(lambda: est.fit(theta_tr, x_tr, theta_va, x_va, protocol, seed))
    info.seconds = train_s
    cpu = {"train": CPU_SECONDS[-1], "sample": 0.0, "c2st": 0.0}
    method = args.c2st if args.c2st != "auto" else DEFAULT_C2ST[task.name]
    draws, accept, sample_s = [], [], []
    for i in refs:
        torch.manual_seed(1000 * seed + i)
        (drawn, rate), s = timed(
            partial(sample_posterior, est, task, observation(task, i), NUM_SAMPLES)
        )
        draws.append(drawn)
        accept.append(rate)
        sample_s.append(s)
        cpu["sample"] += CPU_SECONDS[-1]
    engine = args.c2st_engine
    refs_list = list(refs.values())
    scores, c2st_s, cpu["c2st"] = score_observations(method, engine, refs_list, draws, args.threads)
    check, engine_check = c2st_checks(method, engine, refs, draws, scores, c2st_s, args)
    for i, score, s, rate in zip(refs, scores, c2st_s, accept, strict=True):
        print(
            f"  {task.name} {name} obs {i}: c2st {score:.4f} ({method}, {s:.1f} s), "
            f"acceptance {rate:.3f}",
            flush=True,
        )
    theta_te, x_te = data["test"]
    test_lp, test_s = timed(lambda: est.log_prob(theta_te, x_te))
    test_cpu = CPU_SECONDS[-1]
    torch.manual_seed(seed + 12345)
    ranks, cov_s = timed(
        lambda: coverage_ranks(
            est,
            task,
            args.coverage_draws,
            args.coverage_samples,
            task_rng(task.name, seed, budget, 2),
        )
    )
    return {
        "kind": "run",
        "task": task.name,
        "budget": budget,
        "estimator": name,
        "seed": seed,
        "observations": list(refs),
        "c2st_method": method,
        "c2st_jobs": args.threads,
        "c2st_engine": engine,
        "c2st_engine_check": engine_check,
        "c2st": scores,
        "c2st_mean": statistics.mean(scores),
        "c2st_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        "c2st_seconds": c2st_s,
        "c2st_check": check,
        "acceptance": accept,
        "sample_seconds": sample_s,
        "n_train": len(theta_tr),
        "n_val": len(theta_va),
        "train": asdict(info),
        "test_nll": float(-test_lp.mean()),
        "test_nll_se": float(test_lp.std(ddof=1) / math.sqrt(len(test_lp))),
        "n_test": len(test_lp),
        "test_seconds": test_s,
        "coverage_ranks": [round(float(r), 5) for r in ranks],
        "calibration_error": calibration_error(ranks),
        "coverage_draws": args.coverage_draws,
        "coverage_samples": args.coverage_samples,
        "coverage_seconds": cov_s,
        "cpu_seconds": {**cpu, "test": test_cpu, "coverage": CPU_SECONDS[-1]},
        "num_parameters": est.num_parameters,
        "protocol": asdict(protocol),
        "model": est.model if isinstance(est, RealNVPEstimator) else None,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%d %H:%M"),
        "versions": versions("zuko", "nflows", "scikit-learn", "numpy"),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (task, budget, estimator) of ``args`` for its seed; returns the records."""
    records = []
    start = time.perf_counter()
    for name in args.tasks:
        task = TASKS[name]
        refs = {i: reference_samples(task, i) for i in range(1, args.observations + 1)}
        for budget in args.budgets:
            theta, x = simulations(task, budget, task_rng(name, args.seed, budget, 0))
            train_idx, val_idx = split(np.arange(budget), args.protocol.val_fraction, args.seed)
            data = {
                "train": (theta[train_idx], x[train_idx]),
                "val": (theta[val_idx], x[val_idx]),
                "test": simulations(task, args.test_sims, task_rng(name, args.seed, budget, 1)),
            }
            for est in args.estimators:
                print(f"{name} {budget} {est} (seed {args.seed})", flush=True)
                record, seconds = timed(
                    lambda: run_one(task, budget, est, args.seed, data, refs, args)  # noqa: B023
                )
                record["seconds"] = seconds
                log(args.out, record)
                records.append(record)
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)
    return records


# -- the report and the figure -----------------------------------------------------------------
def recipe(record: dict[str, Any]) -> str:
    """The training recipe a record ran under: ``"sbi"`` (no weight average, no weight decay,
    a constant learning rate: sbi's), ``"ema 0.995, wd 0.003"``, and with a cosine schedule
    ``"ema 0.995, wd 0.003, cosine lr 0.0005 over 300 epochs, patience 300"``; records before
    these options were sbi's. A ``jobs`` record names its runs' recipe the same way."""
    protocol = record.get("protocol", {})
    ema, wd = protocol.get("ema", 0.0), protocol.get("weight_decay", 0.0)
    parts = [f"ema {ema:g}, wd {wd:g}"] if ema or wd else []
    if protocol.get("schedule", "constant") != "constant":
        parts.append(
            f"{protocol['schedule']} lr {protocol['lr']:g} over {protocol['max_epochs']} epochs"
        )
    if protocol.get("patience", Protocol.patience) != Protocol.patience:
        parts.append(f"patience {protocol['patience']}")
    return ", ".join(parts) or "sbi"


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """The run records of the files, the last one of each (task, budget, estimator, seed,
    recipe)."""
    latest: dict[tuple, dict[str, Any]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("kind") == "run":
                    latest[(r["task"], r["budget"], r["estimator"], r["seed"], recipe(r))] = r
    return list(latest.values())


def report(records: list[dict[str, Any]]) -> str:
    """Markdown tables: per task and budget, each estimator's C2ST mean ± std beside the sbibm
    paper's NPE, its test NLL, calibration, acceptance, training and time; the best estimator;
    the fast-vs-exact C2ST check where there is one."""
    lines: list[str] = []
    order = {t: i for i, t in enumerate(TASKS)}
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["task"], r["budget"], recipe(r)), []).append(r)
    for (task, budget, how), rs in sorted(
        groups.items(), key=lambda g: (order[g[0][0]], g[0][1], g[0][2] != "sbi", g[0][2])
    ):
        rs.sort(key=lambda r: (ESTIMATORS.index(r["estimator"]), r["seed"]))
        n_obs = sorted({len(r["c2st"]) for r in rs})
        methods = sorted(
            {r["c2st_method"] + ENGINE_NOTE[r.get("c2st_engine", "sklearn")] for r in rs}
        )
        lines += [
            f"### {task}, {budget:,} simulations, recipe {how} ({'/'.join(methods)} C2ST, "
            f"{'/'.join(map(str, n_obs))} observations; mean ± std over observations)",
            "",
            "| estimator | seed | C2ST | test NLL | calib. err. | min accept. | epochs (best) "
            "| train s | sample s | C2ST s | params |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rs:
            t = r["train"]
            lines.append(
                f"| {r['estimator']} | {r['seed']} | {r['c2st_mean']:.3f} ± {r['c2st_std']:.3f} "
                f"| {r['test_nll']:.3f} | {r['calibration_error']:.3f} "
                f"| {min(r['acceptance']):.3f} | {t['epochs']} ({t['best_epoch']}) "
                f"| {t['seconds']:.0f} | {sum(r['sample_seconds']):.0f} "
                f"| {sum(r['c2st_seconds']):.0f} | {r['num_parameters']:,} |"
            )
        paper = PAPER_NPE.get((task, budget))
        if paper:
            lines.append(
                f"| sbibm paper NPE-NSF (per observation) | | {paper[0]:.3f} ± {paper[1]:.3f} "
                "| | | | | | | | |"
            )
        lines += ["", best_line(rs), ""]
    checks = [(r, c) for r in records for c in r.get("c2st_check", [])]
    lines += check_section(
        "fast vs exact C2ST (same samples)",
        ["task", "estimator", "obs", "exact", "fast", "fast - exact", "exact s", "fast s"],
        checks,
        lambda c: [f"{c['exact']:.4f}", f"{c['fast']:.4f}", f"{c['fast_minus_exact']:+.4f}",
                   f"{c['exact_s']:.1f}", f"{c['fast_s']:.1f}"],
        "fast_minus_exact",
    )  # fmt: skip
    engines = [(r, c) for r in records for c in r.get("c2st_engine_check", [])]
    lines += check_section(
        "batched vs scikit-learn fits of the same C2ST (same samples)",
        ["task", "estimator", "obs", "C2ST", "scikit-learn", "batched", "batched - sklearn",
         "sklearn s"],
        engines,
        lambda c: [c["method"], f"{c['sklearn']:.4f}", f"{c['batched']:.4f}",
                   f"{c['batched_minus_sklearn']:+.4f}", f"{c['sklearn_s']:.1f}"],
        "batched_minus_sklearn",
    )  # fmt: skip
    return "\n".join(lines)


def check_section(
    title: str,
    columns: list[str],
    cases: list[tuple[dict[str, Any], dict[str, Any]]],
    cells: Callable[[dict[str, Any]], list[str]],
    key: str,
) -> list[str]:
    """A Markdown table of C2ST check cases (task, estimator, observation, then ``cells``) and,
    per task, the mean and range of ``key``; nothing when there are no cases."""
    if not cases:
        return []
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r, c in cases:
        row = [r["task"], r["estimator"], str(c["obs"]), *cells(c)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    what = key.replace("_minus_", " - ")
    for task in TASKS:
        diffs = [c[key] for r, c in cases if r["task"] == task]
        if diffs:
            lines.append(
                f"- {task}: {len(diffs)} cases, {what} mean {statistics.mean(diffs):+.4f}, "
                f"from {min(diffs):+.4f} to {max(diffs):+.4f}."
            )
    return [*lines, ""]


def best_line(rs: list[dict[str, Any]]) -> str:
    """Which estimator has the lowest mean C2ST (over seeds), and its paired difference to the
    runner-up over the observations they share."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rs:
        by.setdefault(r["estimator"], []).append(r)
    means = {e: statistics.mean(r["c2st_mean"] for r in v) for e, v in by.items()}
    ranked = sorted(means, key=means.get)
    text = f"Best (lowest mean C2ST): **{ranked[0]}** ({means[ranked[0]]:.3f})"
    if len(ranked) > 1:
        a, b = by[ranked[0]], by[ranked[1]]
        diffs = [
            y - x
            for ra in a
            for rb in b
            if ra["seed"] == rb["seed"] and ra["observations"] == rb["observations"]
            for x, y in zip(ra["c2st"], rb["c2st"], strict=True)
        ]
        text += f"; next {ranked[1]} ({means[ranked[1]]:.3f})"
        if len(diffs) > 1:
            se = statistics.stdev(diffs) / math.sqrt(len(diffs))
            text += (
                f", paired difference {statistics.mean(diffs):.3f} ± {se:.3f} (SE over "
                f"{len(diffs)} observations)"
            )
    return text + "."


def figure(records: list[dict[str, Any]], path: Path) -> None:
    """Expected coverage against the nominal level, one axis per (task, budget), every
    estimator on it (seed 0's record, else the lowest seed's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = {t: i for i, t in enumerate(TASKS)}
    keys = sorted(
        {(r["task"], r["budget"], recipe(r)) for r in records},
        key=lambda k: (order[k[0]], k[1], k[2] != "sbi", k[2]),
    )
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.3 * rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    levels = np.linspace(0, 1, 101)
    for ax, (task, budget, how) in zip(axes.flat, keys, strict=False):
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
        rs = [r for r in records if (r["task"], r["budget"], recipe(r)) == (task, budget, how)]
        for name in ESTIMATORS:
            mine = sorted((r for r in rs if r["estimator"] == name), key=lambda r: r["seed"])
            if mine:
                r = mine[0]
                cov = coverage_curve(np.asarray(r["coverage_ranks"]), levels)
                ax.plot(levels, cov, label=f"{name} ({r['calibration_error']:.3f})")
        ax.set_title(f"{task}, {budget:,} sims" + ("" if how == "sbi" else f"\n{how}"))
        ax.set_xlabel("nominal credibility level")
        ax.set_ylabel("empirical coverage")
        ax.set_aspect("equal")
        ax.legend(fontsize=8, title="mean |error|", title_fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: the order ``--jobs`` hands (task, estimator) runs out, longest first (from the recorded
#: seconds at 10,000 simulations), so that the last run to start is a short one
LONGEST_FIRST = ("two_moons", "slcp", "gaussian_linear")


def _one_run(args: argparse.Namespace, task: str, estimator: str) -> list[dict[str, Any]]:
    """In a worker process: one (task, estimator) for every budget, in one thread."""
    from threadpoolctl import threadpool_limits

    args = copy.copy(args)
    args.tasks, args.estimators, args.threads = [task], [estimator], 1
    torch.set_num_threads(1)
    with threadpool_limits(1):
        return run(args)


def run_parallel(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (task, estimator) of ``args`` as its own run in ``args.jobs`` worker processes of
    one thread each, longest first; each run's record is appended to ``--out`` when it ends
    (the records are those of one-thread runs, as if the runs had gone one after another)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    order = {t: k for k, t in enumerate(LONGEST_FIRST)}
    units = sorted(
        ((t, e) for t in args.tasks for e in args.estimators),
        key=lambda u: (order[u[0]], args.estimators.index(u[1])),
    )
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_one_run, args, t, e) for t, e in units]
        records = [r for f in futures for r in f.result()]
    seconds = time.perf_counter() - start
    print(f"all {len(units)} runs: {seconds:.0f} s wall clock", flush=True)
    log(
        args.out,
        {"kind": "jobs", "jobs": args.jobs, "tasks": args.tasks, "budgets": args.budgets,
         "estimators": args.estimators, "c2st_engine": args.c2st_engine,
         "protocol": asdict(args.protocol), "seconds": seconds,
         "time": time.strftime("%Y-%m-%d %H:%M"), "versions": versions()},
    )  # fmt: skip
    return records


def check_loop() -> None:
    """Train one small conditional realnvp flow through ``fit_data`` and the same flow (same
    seed) through ``train_peer`` under the equivalent protocol, moving average, weight decay
    and clipping included, with each schedule; print the largest weight difference (0.0: the
    two loops take the same steps bit for bit)."""
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(300, 2))
    x = theta + rng.normal(size=(300, 2))
    model = {"num_layers": 2, "hidden_features": 8}
    for schedule in ("constant", "cosine"):
        protocol = Protocol(
            batch_size=50, lr=1e-2, max_epochs=6, patience=20, grad_clip=5.0, ema=0.9,
            weight_decay=1e-3, schedule=schedule,
        )  # fmt: skip
        config = TrainConfig(
            steps=6 * 5, batch_size=50, lr=1e-2, schedule=schedule, grad_clip=5.0,
            eval_every=5, patience=20, seed=3, ema=0.9, weight_decay=1e-3,
        )  # fmt: skip
        ours, _ = fit_data(theta[:250], theta[250:], model, config, 0, "cpu", (), x[:250], x[250:])
        torch.manual_seed(0)
        peer = new_flow(model, theta[:250], "cpu", x[:250])
        train, val = (
            (peer.as_input(theta[part]), torch.as_tensor(x[part]))
            for part in (slice(250), slice(250, None))
        )
        with flushed_denormals():
            train_peer(peer, peer.log_prob, train, val, protocol, 3)
        gap = max(
            (a - b).abs().max().item()
            for a, b in zip(ours.state_dict().values(), peer.state_dict().values(), strict=True)
            if a.is_floating_point()
        )
        print(f"{schedule}: largest weight difference, fit_data against train_peer: {gap}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[10_000])
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch and BLAS threads; C2ST folds in as many processes",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="run the (task, estimator) pairs in this many one-thread processes (--threads 1)",
    )
    parser.add_argument(
        "--observations", type=int, default=NUM_OBSERVATIONS, help="score observations 1..N"
    )
    parser.add_argument("--c2st", choices=("auto", "exact", "fast"), default="auto")
    parser.add_argument(
        "--c2st-engine",
        choices=("batched", "sklearn"),
        default="batched",
        help="fit sbibm's C2ST classifiers all at once in torch (c2st_batched.py), or one by one",
    )
    parser.add_argument(
        "--check-engine",
        action="store_true",
        help="also score the first --check-observations with scikit-learn, for comparison",
    )
    parser.add_argument(
        "--check-c2st", action="store_true", help="also score the other C2ST, for comparison"
    )
    parser.add_argument("--check-observations", type=int, default=2, help="with --check-c2st")
    parser.add_argument("--coverage-draws", type=int, default=200, help="M pairs (theta*, x*)")
    parser.add_argument("--coverage-samples", type=int, default=1000, help="S draws per x*")
    parser.add_argument("--test-sims", type=int, default=10_000, help="fresh pairs for test NLL")
    parser.add_argument("--batch-size", type=int, default=Protocol.batch_size)
    parser.add_argument("--lr", type=float, default=Protocol.lr)
    parser.add_argument("--max-epochs", type=int, default=Protocol.max_epochs)
    parser.add_argument("--patience", type=int, default=Protocol.patience)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default=Protocol.schedule)
    parser.add_argument(
        "--ema", type=float, default=Protocol.ema, help="weights' moving average, every estimator"
    )
    parser.add_argument(
        "--weight-decay", type=float, default=Protocol.weight_decay, help="every estimator"
    )
    parser.add_argument(
        "--model", type=json.loads, default=None, help="realnvp's options as JSON (tuning only)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sbi_npe.jsonl"))
    parser.add_argument("--report", nargs="+", type=Path, metavar="JSONL")
    parser.add_argument("--figure", type=Path, help="calibration figure (PNG)")
    parser.add_argument(
        "--check-loop",
        action="store_true",
        help="check that train_peer takes realnvp's Trainer's steps (constant and cosine)",
    )
    args = parser.parse_args()
    if args.check_loop:
        check_loop()
        return
    if args.report:
        records = load(args.report)
        print(report(records))
        if args.figure:
            figure(records, args.figure)
        return
    if not 1 <= args.observations <= NUM_OBSERVATIONS:
        parser.error(f"--observations must be in 1..{NUM_OBSERVATIONS}")
    args.protocol = Protocol(
        batch_size=args.batch_size,
        lr=args.lr,
        max_epochs=args.max_epochs,
        patience=args.patience,
        ema=args.ema,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
    )
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from threadpoolctl import threadpool_limits

    if args.jobs > 1:
        records = run_parallel(args)
    else:
        with threadpool_limits(args.threads):
            records = run(args)
    if args.figure:
        figure(records, args.figure)


if __name__ == "__main__":
    main()
