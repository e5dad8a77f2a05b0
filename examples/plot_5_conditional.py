"""
Conditional flows and posterior estimation
==========================================

A conditional flow models `p(x | c)`: every coupling's conditioner sees the context `c` beside
the features it keeps. Trained on simulated pairs `(theta, x)` of a model with a prior
`p(theta)`, the flow `q(theta | x)` is an amortized posterior: one training run, then the
posterior of any observation in one pass (neural posterior estimation, what the `sbi` package
does). Here the simulator has a posterior in closed form, so we can check the flow against it.
"""

# %%
# A simulator with a known posterior
# ----------------------------------
# `theta ~ N(0, I)` in 2-D and `x = A theta + noise`, with noise `N(0, s^2 I)`: the posterior
# is Gaussian, with covariance `(I + A^T A / s^2)^-1` and mean `cov A^T x / s^2`.
import matplotlib.pyplot as plt
import numpy as np

from realnvp import ConditionalRealNVPDensity

rng = np.random.default_rng(0)
A = np.array([[1.0, 0.8], [0.0, 0.6]])
s = 0.4
theta = rng.standard_normal((4000, 2))
x = theta @ A.T + s * rng.standard_normal((4000, 2))
cov = np.linalg.inv(np.eye(2) + A.T @ A / s**2)


def posterior_mean(x_o: np.ndarray) -> np.ndarray:
    return cov @ A.T @ x_o / s**2


# %%
# Train q(theta | x)
# ------------------
# `ConditionalRealNVPDensity` is the scikit-learn face of `RealNVP(context_features=...)`:
# `fit(X, y)` models X given y. Here X is theta and y is the observation x. (A small model and
# 400 steps, so that the page builds quickly.)
est = ConditionalRealNVPDensity(hidden_features=64, steps=400, random_state=0).fit(theta, x)

# %%
# The posterior of three observations
# -----------------------------------
# `sample(n, y)` draws n samples for each row of y: shape (n, rows, features), as
# `torch.distributions` lays them out.
observations = np.array([[1.5, 0.5], [-1.0, 0.2], [0.0, -0.8]])
draws = est.sample(4000, observations, random_state=1)
print("draws", draws.shape)
fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
for k, (ax, x_o) in enumerate(zip(axes, observations, strict=True)):
    exact = rng.multivariate_normal(posterior_mean(x_o), cov, 4000)
    ax.scatter(*exact.T, s=1, alpha=0.3, label="exact posterior")
    ax.scatter(*draws[:, k].T, s=1, alpha=0.3, label="q(theta | x)")
    ax.set_title(f"x = {x_o.tolist()}")
    m, c = draws[:, k].mean(0), np.cov(draws[:, k].T)
    print(
        f"x = {x_o}: mean {m.round(3)} (exact {posterior_mean(x_o).round(3)}), "
        f"std {np.sqrt(np.diag(c)).round(3)} (exact {np.sqrt(np.diag(cov)).round(3)})"
    )
axes[0].legend(markerscale=8)
fig.tight_layout()

# %%
# Densities, and their gap to the truth
# -------------------------------------
# `score_samples(X, y)` is `log q(theta | x)` for each pair. Averaged over fresh pairs it is
# the held-out log-likelihood, which no model can push past the exact posterior's: the
# difference is the expected KL divergence from the true posterior, in nats.
theta_t = rng.standard_normal((2000, 2))
x_t = theta_t @ A.T + s * rng.standard_normal((2000, 2))
mean_t = x_t @ (cov @ A.T / s**2).T
d = theta_t - mean_t
exact_lp = -0.5 * np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d) - 0.5 * np.log(
    np.linalg.det(2 * np.pi * cov)
)
gap = exact_lp - est.score_samples(theta_t, x_t)
print(f"gap to the exact posterior: {gap.mean():.3f} +- {gap.std() / np.sqrt(len(gap)):.3f} nats")

# %%
# From the shell
# --------------
# `realnvp train data.csv --context COLS --out RUN` conditions on the columns COLS and models the
# others; `realnvp sample RUN --context "1.5,0.5" -n 1000` samples one context, and
# `--context-file ctx.csv` many. `realnvp train digits --conditional` trains a class-conditional
# image model and `realnvp sample RUN --label 3 -n 64` draws threes. The README's conditional
# section has the benchmark against zuko and nflows on sbibm's tasks.
