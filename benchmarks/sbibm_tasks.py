"""Three sbibm tasks (two_moons, gaussian_linear, slcp), their reference files, and sbibm's C2ST.

A numpy port of the task definitions of sbibm 1.1.0 (Lueckmann et al., "Benchmarking
Simulation-Based Inference", AISTATS 2021; ``sbibm/tasks/<task>/task.py``), so that amortized
posterior estimation can be scored on the sbibm benchmark without importing sbibm, pyro or sbi.

Tasks (``TASKS[name]``):

- ``two_moons``: theta ~ U([-1, 1]^2); a ~ U(-pi/2, pi/2), r ~ N(0.1, 0.01^2),
  p = (r cos a + 0.25, r sin a), x = p + (-|theta1 + theta2| / sqrt2, (-theta1 + theta2) / sqrt2).
- ``gaussian_linear``: theta ~ N(0, 0.1 I_10), x ~ N(theta, 0.1 I_10). sbibm calls 0.1 a "scale"
  ("standard deviation" in its docstring) but builds ``precision_matrix=inverse(0.1 * I)``, so
  0.1 is the *variance* (standard deviation sqrt(0.1) ~ 0.316). Posterior: N(x / 2, 0.05 I).
- ``slcp``: theta ~ U([-3, 3]^5); four i.i.d. 2-D Gaussian points with mean theta[0:2],
  standard deviations s1 = theta[2]^2, s2 = theta[3]^2, correlation tanh(theta[4]) (covariance
  [[s1^2 + 1e-6, rho s1 s2], [rho s1 s2, s2^2 + 1e-6]]), flattened to (x1, y1, ..., x4, y4).

Reference files (observations 1..10 of each task: ``observation.csv``, ``true_parameters.csv``,
``reference_posterior_samples.csv.bz2`` with 10,000 samples) ship inside the ``sbibm`` wheel. They
are read from the directory in the environment variable ``SBIBM_DIR`` (the unzipped wheel or its
``sbibm/`` package folder) or else from an installed ``sbibm`` (found without importing it).

``c2st`` is sbibm's classifier two-sample test (``sbibm/metrics/c2st.py``), as used for the
paper's C2ST column (``z_score=True``, reference samples first, 10,000 samples each).

Usage:
    SBIBM_DIR=/path/to/unzipped/sbibm-wheel python benchmarks/sbibm_tasks.py --check
"""

from __future__ import annotations

import argparse
import bz2
import importlib.util
import math
import os
import time
import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

NUM_OBSERVATIONS = 10
"""Observations 1..10 ship with sbibm for every task."""

_GET_FILES = (
    "Get them with `pip download sbibm --no-deps -d DIR` and unzip the wheel in DIR, then set "
    "SBIBM_DIR=DIR (or DIR/sbibm); or `pip install sbibm` (pin torch, e.g. "
    "`pip install torch==2.13.0 sbibm`)."
)


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------


class Task(ABC):
    """An sbibm task: a prior over theta and a simulator x | theta, both in float64 numpy."""

    name: str
    theta_dim: int
    x_dim: int

    @abstractmethod
    def prior_sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` parameters from the prior, shape ``(n, theta_dim)``."""

    @abstractmethod
    def prior_log_prob(self, theta: np.ndarray) -> np.ndarray:
        """Prior log density of each row of ``theta`` (``-inf`` outside the support)."""

    @abstractmethod
    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One simulation per row of ``theta`` (``(n, theta_dim)``), shape ``(n, x_dim)``."""

    def in_support(self, theta: np.ndarray) -> np.ndarray:
        """Whether each row of ``theta`` has positive prior density."""
        return np.isfinite(self.prior_log_prob(theta))

    def _check_theta(self, theta: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        if theta.ndim != 2 or theta.shape[1] != self.theta_dim:
            raise ValueError(f"{self.name}: theta must be (n, {self.theta_dim}), got {theta.shape}")
        return theta


class BoxUniformTask(Task):
    """A task whose prior is uniform on the box ``[low, high]^theta_dim``."""

    low: float
    high: float

    def prior_sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` parameters uniformly from the box."""
        return rng.uniform(self.low, self.high, size=(n, self.theta_dim))

    def prior_log_prob(self, theta: np.ndarray) -> np.ndarray:
        """``-theta_dim * log(high - low)`` inside the box, ``-inf`` outside."""
        theta = self._check_theta(theta)
        inside = np.all((theta >= self.low) & (theta <= self.high), axis=1)
        value = -self.theta_dim * math.log(self.high - self.low)
        return np.where(inside, value, -np.inf)


class TwoMoons(BoxUniformTask):
    """sbibm's ``two_moons``: a crescent of radius 0.1 moved by a folded rotation of theta."""

    name = "two_moons"
    theta_dim = 2
    x_dim = 2
    low = -1.0
    high = 1.0
    a_low = -math.pi / 2.0
    a_high = math.pi / 2.0
    base_offset = 0.25
    r_loc = 0.1
    r_scale = 0.01

    @staticmethod
    def shift(theta: np.ndarray) -> np.ndarray:
        """sbibm's ``_map_fun`` offset: ``(-|t1 + t2| / sqrt2, (-t1 + t2) / sqrt2)``.

        sbibm writes it as a rotation by -pi/4, ``z0 = c t1 - s t2``, ``z1 = s t1 + c t2`` with
        ``c = cos(-pi/4)``, ``s = sin(-pi/4)``, and returns ``p + (-|z0|, z1)``.
        """
        c = math.cos(-math.pi / 4.0)
        s = math.sin(-math.pi / 4.0)
        z0 = c * theta[:, 0] - s * theta[:, 1]
        z1 = s * theta[:, 0] + c * theta[:, 1]
        return np.stack((-np.abs(z0), z1), axis=1)

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``x = (r cos a + 0.25, r sin a) + shift(theta)``, a ~ U(-pi/2, pi/2), r ~ N(.1, .01)."""
        theta = self._check_theta(theta)
        n = theta.shape[0]
        a = rng.uniform(self.a_low, self.a_high, size=n)
        r = rng.normal(self.r_loc, self.r_scale, size=n)
        p = np.stack((np.cos(a) * r + self.base_offset, np.sin(a) * r), axis=1)
        return p + self.shift(theta)

    def crescent_coordinates(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Invert the shift: ``(u, v) = x - shift(theta) - (0.25, 0)``, so ``x`` is reachable
        from ``theta`` iff ``u >= 0``, and then ``r = |(u, v)| ~ N(0.1, 0.01^2)``."""
        theta = self._check_theta(theta)
        p = np.atleast_2d(x) - self.shift(theta)
        return np.stack((p[:, 0] - self.base_offset, p[:, 1]), axis=1)

    def posterior_sample(self, x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """Exact posterior draws for any ``x`` (sbibm's ``_sample_reference_posterior``).

        Draw a crescent point p, set ``z = (+-(p0 - x0), x1 - p1)`` with a random sign, rotate
        back by +pi/4 and keep the draws inside the prior (sbibm also drops exact duplicates).
        """
        x = np.asarray(x, dtype=np.float64).reshape(2)
        c = math.cos(math.pi / 4.0)
        s = math.sin(math.pi / 4.0)
        out: list[np.ndarray] = []
        kept = 0
        while kept < n:
            m = 2 * (n - kept) + 16
            p = self.simulate(np.zeros((m, 2)), rng)
            sign = np.where(rng.random(m) < 0.5, -1.0, 1.0)
            z0 = sign * (p[:, 0] - x[0])
            z1 = x[1] - p[:, 1]
            theta = np.stack((c * z0 - s * z1, s * z0 + c * z1), axis=1)
            theta = theta[self.in_support(theta)]
            out.append(theta)
            kept += theta.shape[0]
        return np.concatenate(out)[:n]


class GaussianLinear(Task):
    """sbibm's ``gaussian_linear``: theta ~ N(0, 0.1 I), x ~ N(theta, 0.1 I), 10-D.

    ``prior_var`` and ``noise_var`` are *variances*: sbibm passes ``prior_scale=0.1`` and
    ``simulator_scale=0.1`` as ``precision_matrix=inverse(scale * I)``.
    """

    name = "gaussian_linear"
    theta_dim = 10
    x_dim = 10
    prior_var = 0.1
    noise_var = 0.1

    def prior_sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``N(0, 0.1 I)`` draws."""
        return rng.normal(0.0, math.sqrt(self.prior_var), size=(n, self.theta_dim))

    def prior_log_prob(self, theta: np.ndarray) -> np.ndarray:
        """Log density of ``N(0, 0.1 I)``."""
        theta = self._check_theta(theta)
        return _diag_gauss_log_prob(theta, 0.0, self.prior_var)

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``x = theta + N(0, 0.1 I)``."""
        theta = self._check_theta(theta)
        return theta + rng.normal(0.0, math.sqrt(self.noise_var), size=theta.shape)

    def log_likelihood(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``log N(x; theta, 0.1 I)`` for each row of ``theta``."""
        theta = self._check_theta(theta)
        return _diag_gauss_log_prob(np.atleast_2d(x) - theta, 0.0, self.noise_var)

    def posterior_mean_var(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """The exact posterior ``N(mean, var I)``: with both variances 0.1, ``N(x / 2, 0.05 I)``."""
        prec = 1.0 / self.prior_var + 1.0 / self.noise_var
        return np.asarray(x, dtype=np.float64) / (self.noise_var * prec), 1.0 / prec


class SLCP(BoxUniformTask):
    """sbibm's ``slcp`` (simple likelihood, complex posterior), without distractors."""

    name = "slcp"
    theta_dim = 5
    x_dim = 8
    low = -3.0
    high = 3.0
    num_points = 4
    eps = 1e-6

    def _mean_cov(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = theta[:, 0:2]
        s1 = theta[:, 2] ** 2
        s2 = theta[:, 3] ** 2
        rho = np.tanh(theta[:, 4])
        cov = np.empty((theta.shape[0], 2, 2))
        cov[:, 0, 0] = s1**2 + self.eps
        cov[:, 0, 1] = rho * s1 * s2
        cov[:, 1, 0] = rho * s1 * s2
        cov[:, 1, 1] = s2**2 + self.eps
        return m, cov

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Four 2-D Gaussian points per theta, flattened ``(x1, y1, ..., x4, y4)``."""
        theta = self._check_theta(theta)
        n = theta.shape[0]
        m, cov = self._mean_cov(theta)
        chol = np.linalg.cholesky(cov)  # (n, 2, 2)
        z = rng.standard_normal(size=(n, self.num_points, 2))
        pts = m[:, None, :] + np.einsum("nij,nkj->nki", chol, z)
        return pts.reshape(n, self.x_dim)

    def log_likelihood(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Sum over the four points of the bivariate normal log density, per row of ``theta``."""
        theta = self._check_theta(theta)
        m, cov = self._mean_cov(theta)
        pts = np.atleast_2d(x).reshape(-1, self.num_points, 2)
        d = pts - m[:, None, :]
        det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
        quad = (
            cov[:, None, 1, 1] * d[..., 0] ** 2
            - 2.0 * cov[:, None, 0, 1] * d[..., 0] * d[..., 1]
            + cov[:, None, 0, 0] * d[..., 1] ** 2
        ) / det[:, None]
        per_point = -0.5 * quad - 0.5 * np.log(det)[:, None] - math.log(2.0 * math.pi)
        return per_point.sum(axis=1)


def _diag_gauss_log_prob(d: np.ndarray, mean: float, var: float) -> np.ndarray:
    k = d.shape[1]
    return -0.5 * ((d - mean) ** 2).sum(axis=1) / var - 0.5 * k * math.log(2.0 * math.pi * var)


TASKS: dict[str, Task] = {t.name: t for t in (TwoMoons(), GaussianLinear(), SLCP())}
"""The three tasks by sbibm name."""


def get_task(task: str | Task) -> Task:
    """The task named ``task`` (one of ``TASKS``), or ``task`` itself."""
    if isinstance(task, Task):
        return task
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; one of {sorted(TASKS)}") from None


# --------------------------------------------------------------------------------------------
# reference files
# --------------------------------------------------------------------------------------------


def sbibm_dir() -> Path:
    """The ``sbibm`` package folder (holding ``tasks/``) with the reference files.

    ``SBIBM_DIR`` wins when set (the unzipped wheel, or its ``sbibm/`` folder); otherwise an
    installed sbibm is located with ``importlib.util.find_spec`` (which does not import it).
    """
    env = os.environ.get("SBIBM_DIR")
    if env:
        root = Path(env).expanduser()
        for cand in (root, root / "sbibm"):
            if (cand / "tasks").is_dir():
                return cand
        raise FileNotFoundError(
            f"SBIBM_DIR={env} holds neither tasks/ nor sbibm/tasks/ from the sbibm wheel. "
            + _GET_FILES
        )
    spec = importlib.util.find_spec("sbibm")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            if (Path(loc) / "tasks").is_dir():
                return Path(loc)
    raise FileNotFoundError(
        "sbibm's reference files were not found: SBIBM_DIR is not set and sbibm is not "
        "installed. " + _GET_FILES
    )


def _obs_dir(task: str | Task, i: int) -> Path:
    name = get_task(task).name
    if not 1 <= i <= NUM_OBSERVATIONS:
        raise ValueError(f"observation must be in 1..{NUM_OBSERVATIONS}, got {i}")
    path = sbibm_dir() / "tasks" / name / "files" / f"num_observation_{i}"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is missing. " + _GET_FILES)
    return path


def _read_csv(path: Path) -> np.ndarray:
    """A headed, comma-separated table as a 2-D float64 array (``.bz2`` decompressed)."""
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rt") as fh:
        return np.atleast_2d(np.loadtxt(fh, delimiter=",", skiprows=1, dtype=np.float64))


def observation(task: str | Task, i: int) -> np.ndarray:
    """Observation ``i`` (1..10) of ``task``, shape ``(x_dim,)``."""
    t = get_task(task)
    x = _read_csv(_obs_dir(t, i) / "observation.csv")
    assert x.shape == (1, t.x_dim), x.shape
    return x[0]


def true_parameters(task: str | Task, i: int) -> np.ndarray:
    """The parameters that generated observation ``i``, shape ``(theta_dim,)``."""
    t = get_task(task)
    theta = _read_csv(_obs_dir(t, i) / "true_parameters.csv")
    assert theta.shape == (1, t.theta_dim), theta.shape
    return theta[0]


def reference_samples(task: str | Task, i: int) -> np.ndarray:
    """sbibm's 10,000 reference posterior samples for observation ``i``, ``(10000, theta_dim)``."""
    t = get_task(task)
    samples = _read_csv(_obs_dir(t, i) / "reference_posterior_samples.csv.bz2")
    assert samples.shape[1] == t.theta_dim, samples.shape
    return samples


# --------------------------------------------------------------------------------------------
# C2ST
# --------------------------------------------------------------------------------------------


#: the ``fast`` C2ST's early stopping (``c2st``)
EARLY_STOPPING = {"early_stopping": True, "validation_fraction": 0.1, "n_iter_no_change": 10}


def z_scored(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """sbibm's z-scoring for the C2ST: both samples in float32, by ``a``'s mean and unbiased
    (``torch.std``) standard deviation."""
    x = torch.as_tensor(a, dtype=torch.float32)
    y = torch.as_tensor(b, dtype=torch.float32)
    mean, std = torch.mean(x, dim=0), torch.std(x, dim=0)
    return ((x - mean) / std).cpu().numpy(), ((y - mean) / std).cpu().numpy()


def c2st(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    seed: int = 1,
    n_folds: int = 5,
    z_score: bool = True,
    fast: bool = False,
    n_jobs: int = 1,
) -> float:
    """Classifier two-sample test accuracy, as sbibm 1.1.0 computes it.

    Port of ``sbibm/metrics/c2st.py::c2st``: both samples are z-scored with the mean and the
    (unbiased, ``torch.std``) standard deviation of ``a``; an ``MLPClassifier`` (relu, two hidden
    layers of ``10 * dim``, adam, ``max_iter=10000``, ``random_state=seed``, no early stopping)
    separates ``a`` (label 0) from ``b`` (label 1) under ``KFold(n_folds, shuffle=True,
    random_state=seed)``; the mean test accuracy is returned (0.5: indistinguishable, 1: disjoint).
    sbibm works in float32 (its CSVs are read as float32), and so does this.

    For the paper's numbers pass the reference samples as ``a`` and the estimate's samples as
    ``b``, 10,000 each (the results repository's ``benchmarking_sbi/run.py`` calls
    ``c2st(X=reference_posterior_samples, Y=algorithm_posterior_samples, z_score=True)`` and
    ``utils.py`` stores that as the C2ST column).

    Two additions, off by default:

    - ``fast``: the classifier's early stopping on (``early_stopping=True,
      validation_fraction=0.1, n_iter_no_change=10``): each fold's classifier holds out 10% of
      its training rows and stops after 10 epochs without a better accuracy on them, keeping
      the best weights; sbibm's stops only when the training loss stalls.
    - ``n_jobs``: the folds are fitted in that many worker processes (scikit-learn's
      ``cross_val_score(n_jobs=...)``, one BLAS thread each); each fold's classifier is seeded
      the same way, so the score is the same (up to BLAS rounding).
    """
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    if z_score:
        xn, yn = z_scored(a, b)
    else:
        xn = torch.as_tensor(a, dtype=torch.float32).cpu().numpy()
        yn = torch.as_tensor(b, dtype=torch.float32).cpu().numpy()
    ndim = xn.shape[1]
    clf = MLPClassifier(
        activation="relu",
        hidden_layer_sizes=(10 * ndim, 10 * ndim),
        max_iter=10000,
        solver="adam",
        random_state=seed,
        **(EARLY_STOPPING if fast else {}),
    )
    data = np.concatenate((xn, yn))
    target = np.concatenate((np.zeros((xn.shape[0],)), np.ones((yn.shape[0],))))
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    jobs = max(1, min(n_jobs, n_folds))
    try:
        scores = cross_val_score(clf, data, target, cv=folds, scoring="accuracy", n_jobs=jobs)
    except (OSError, RuntimeError, ImportError) as error:  # no worker processes: one at a time
        if jobs == 1:
            raise
        warnings.warn(
            f"C2ST in {jobs} processes failed ({error}); fitting the folds in turn", stacklevel=2
        )
        scores = cross_val_score(clf, data, target, cv=folds, scoring="accuracy")
    return float(np.asarray(np.mean(scores)).astype(np.float32))


# --------------------------------------------------------------------------------------------
# checks of the port against sbibm's files
# --------------------------------------------------------------------------------------------


def check_task(
    task: str | Task, n_sim: int = 20_000, seed: int = 0
) -> list[dict[str, float | int]]:
    """Check the simulator and the reference files of ``task``, one dict per observation.

    Keys, for every task: ``in_prior`` (fraction of reference samples in the prior support),
    ``q_<j>`` (quantile of the true theta_j among the reference samples' theta_j: over many
    observations these should look uniform), ``z_mean`` (RMS over dims of
    ``(mean - theta_true) / std`` of the reference samples; about 1 when the posterior is
    unimodal and calibrated, larger for the multimodal two_moons and slcp posteriors).

    Per task:
    - two_moons: ``r_z`` (the observation's crescent radius given the true theta, standardized by
      N(0.1, 0.01)), ``u_obs`` (>= 0 iff the true theta can reach the observation), and for the
      reference samples ``ref_u_min`` (>= 0 up to float32 rounding) and ``ref_r_mean``/
      ``ref_r_std`` (should be 0.1 / 0.01: every reference sample maps the observation onto the
      crescent).
    - gaussian_linear: ``chi2`` (sum of squared standardized residuals (x - theta) / sqrt(0.1),
      chi^2 with 10 dof), ``ref_mean_err`` and ``ref_var_ratio`` (reference sample mean minus the
      exact x / 2, in posterior standard deviations, max over dims; sample variance over 0.05).
    - slcp: ``loglik_pct`` (percentile of the observation's log-likelihood under the true theta
      among ``n_sim`` simulated data sets' log-likelihoods), ``mean_err`` (largest
      |point mean - theta[0:2]| / std over the two coordinates), ``q_abs_2``, ``q_abs_3``
      (quantiles of |theta_2|, |theta_3|, whose signs are not identifiable).
    """
    t = get_task(task)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, float | int]] = []
    for i in range(1, NUM_OBSERVATIONS + 1):
        x = observation(t, i)
        theta = true_parameters(t, i)
        ref = reference_samples(t, i)
        row: dict[str, float | int] = {"obs": i, "n_ref": ref.shape[0]}
        row["in_prior"] = float(t.in_support(ref).mean())
        for j in range(t.theta_dim):
            row[f"q_{j}"] = float((ref[:, j] < theta[j]).mean())
        std = ref.std(axis=0)
        row["z_mean"] = float(np.sqrt((((ref.mean(axis=0) - theta) / std) ** 2).mean()))
        if isinstance(t, TwoMoons):
            uv = t.crescent_coordinates(theta[None], x)[0]
            row["u_obs"] = float(uv[0])
            row["r_z"] = float((np.hypot(*uv) - t.r_loc) / t.r_scale)
            uv_ref = t.crescent_coordinates(ref, np.broadcast_to(x, ref.shape))
            r_ref = np.hypot(uv_ref[:, 0], uv_ref[:, 1])
            row["ref_u_min"] = float(uv_ref[:, 0].min())
            row["ref_r_mean"] = float(r_ref.mean())
            row["ref_r_std"] = float(r_ref.std())
        elif isinstance(t, GaussianLinear):
            row["chi2"] = float((((x - theta) ** 2) / t.noise_var).sum())
            mean, var = t.posterior_mean_var(x)
            row["ref_mean_err"] = float(np.abs((ref.mean(axis=0) - mean) / math.sqrt(var)).max())
            row["ref_var_ratio"] = float((ref.var(axis=0, ddof=1) / var).mean())
        elif isinstance(t, SLCP):
            thetas = np.broadcast_to(theta, (n_sim, t.theta_dim))
            sims = t.simulate(thetas, rng)
            ll_sim = t.log_likelihood(thetas, sims)
            ll_obs = float(t.log_likelihood(theta[None], x)[0])
            row["loglik_pct"] = float((ll_sim < ll_obs).mean() * 100.0)
            m, cov = t._mean_cov(theta[None])
            pts = x.reshape(t.num_points, 2)
            se = np.sqrt(np.diag(cov[0]) / t.num_points)
            row["mean_err"] = float(np.abs((pts.mean(axis=0) - m[0]) / se).max())
            row["q_abs_2"] = float((np.abs(ref[:, 2]) < abs(theta[2])).mean())
            row["q_abs_3"] = float((np.abs(ref[:, 3]) < abs(theta[3])).mean())
        rows.append(row)
    return rows


def _print_rows(name: str, rows: list[dict[str, float | int]]) -> None:
    print(f"== {name}")
    keys = list(rows[0])
    print(" ".join(f"{k:>12}" for k in keys))
    for row in rows:
        print(" ".join(f"{row[k]:>12.4g}" for k in keys))


def main() -> None:
    """``--check``: the checks of ``check_task``; ``--c2st``: c2st sanity cases and timings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="check the tasks against sbibm")
    parser.add_argument("--c2st", action="store_true", help="c2st sanity cases and timings")
    parser.add_argument("--n", type=int, default=10_000, help="samples per side for --c2st")
    args = parser.parse_args()
    if args.check:
        for name in TASKS:
            _print_rows(name, check_task(name))
    if args.c2st:
        rng = np.random.default_rng(0)
        for dim in (2, 10):
            a = rng.standard_normal((args.n, dim))
            b = rng.standard_normal((args.n, dim))
            start = time.perf_counter()
            same = c2st(a, b)
            elapsed = time.perf_counter() - start
            shifted = c2st(a, b + 3.0)
            print(f"dim {dim}: same {same:.4f} ({elapsed:.1f} s), shifted by 3: {shifted:.4f}")


if __name__ == "__main__":
    main()
