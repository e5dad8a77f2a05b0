"""
Quick start: fit, score, sample, encode and decode
==================================================

A Real NVP flow `f` maps data `x` to a latent `z = f(x)` with a standard normal density, and
gives three exact operations: the log-likelihood
`log p(x) = log N(f(x); 0, I) + log |det df/dx|`, sampling `x = f^-1(z)` from `z ~ N(0, I)`,
and latent inference `z = f(x)`. Here they are on scikit-learn's two moons, first in Python,
then from the shell.
"""

# %%
# Fit
# ---
# `RealNVPDensity` is a scikit-learn estimator: `fit` holds out a tenth of the rows for
# validation, standardizes the data inside the flow (so densities are in the data's units),
# trains with Adam and keeps the weights with the best validation likelihood. Left to itself it
# chooses the conditioners' width and the recipe from the number of rows and trains up to 5,000
# steps with early stopping; here a small model trains for 300 steps so that the page builds in
# seconds (drop `hidden_features` and `steps` for the real thing; the depth study shows how close
# a full-size flow gets to the exact limit).
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import make_moons

from realnvp import RealNVPDensity
from realnvp.data import moons_log_density

torch.manual_seed(0)
X, _ = make_moons(2000, noise=0.05, random_state=0)
X_test, _ = make_moons(2000, noise=0.05, random_state=1)
est = RealNVPDensity(num_layers=6, hidden_features=64, steps=300, random_state=0).fit(X)
print(est.flow_.config)

# %%
# Score
# -----
# `score_samples` gives `log p(x)` of each row, in nats; `score` their sum. Two moons has an
# exact density (`moons_log_density`, by quadrature), so we can say how far the model is from
# the best any model can do on these test points.
log_p = est.score_samples(X_test)
exact = moons_log_density(X_test, noise=0.05)
print(
    f"test NLL {-log_p.mean():.3f} nats, exact limit {-exact.mean():.3f}, "
    f"gap {np.mean(exact - log_p):+.3f}"
)

# %%
# Sample, encode, decode
# ----------------------
# The flow itself is `est.flow_`, a `torch.nn.Module`. `encode` is `f`, `decode` its inverse;
# a round trip returns the data to float32 rounding.
flow = est.flow_
x = flow.as_input(X_test)  # float32 tensor, the model's device
z = flow.encode(x)
x_back = flow.decode(z)
print("round-trip error", (x_back - x).abs().max().item())
print("latent mean", z.mean(0).tolist(), "latent std", z.std(0).tolist())

samples = est.sample(2000, random_state=0)
grid = np.stack(np.meshgrid(np.linspace(-1.5, 2.5, 120), np.linspace(-1, 1.5, 90)), -1)
density = np.exp(est.score_samples(grid.reshape(-1, 2))).reshape(grid.shape[:2])

fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
ax[0].imshow(density, origin="lower", extent=(-1.5, 2.5, -1, 1.5), aspect="auto")
ax[0].set_title("learned density p(x)")
ax[1].scatter(*samples.T, s=1)
ax[1].set_title("samples x = f^-1(z)")
ax[2].scatter(*z.detach().numpy().T, s=1, c=X_test[:, 0])
ax[2].set_title("latent codes z = f(x)")
for a in ax[1:]:
    a.set_aspect("equal")
fig.tight_layout()

# %%
# The same from the shell
# -----------------------
# The command-line tool does the same on files (CSV, .npy, Parquet) or a built-in data set, and
# keeps everything in a run folder: the model, checkpoints, `metrics.csv`. Each command has
# `--help` with an example.
import subprocess
import sys
import tempfile
from pathlib import Path

run = Path(tempfile.mkdtemp()) / "moons"


def shell(*args: str) -> None:
    """Run ``realnvp ARGS`` and show what it prints."""
    print("$ realnvp", " ".join(args))
    out = subprocess.run(
        [sys.executable, "-m", "realnvp", *args], capture_output=True, text=True, check=True
    )
    print(out.stdout.strip())


shell(
    "train",
    "moons",
    "--rows",
    "3000",
    "--hidden",
    "64",
    "--steps",
    "100",
    "--out",
    str(run),
    "--no-progress",
)
shell("eval", str(run), "moons", "--rows", "2000", "--data-seed", "1", "--json")
shell("sample", str(run), "-n", "3", "--seed", "0", "-o", "-")
