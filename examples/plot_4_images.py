"""
Images: the multi-scale model on digits
=======================================

The paper's image model (its section 3.6) on scikit-learn's 1,797 8x8 digits (grey levels 0 to
16): checkerboard and channel couplings with ResNet conditioners, a squeeze between scales, and
half of the channels factored out at each scale. Trained here for 100 steps at a small width so
that the page builds in seconds (its samples are blurry for it); `realnvp train digits --out
runs/digits` trains the full recipe (see the README for its bits/dim).
"""

# %%
# Train from the shell
# --------------------
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from realnvp.training import load_model

work = Path(tempfile.mkdtemp())


def realnvp(*args: str) -> None:
    """Run ``realnvp ARGS``; show the command and what it printed."""
    print("$ realnvp", " ".join(a.replace(str(work) + "/", "") for a in args))
    out = subprocess.run(
        [sys.executable, "-m", "realnvp", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
    )
    print(out.stdout.strip())


realnvp(
    "train",
    "digits",
    "--out",
    "digits",
    "--channels",
    "16",
    "--steps",
    "100",
    "--eval-every",
    "50",
    "--no-progress",
)
print((work / "digits" / "metrics.csv").read_text())

# %%
# Bits per dimension
# ------------------
# Images are integers, so the flow models them *dequantized*: each pixel plus uniform noise on
# [0, 1), a continuous density whose likelihood bounds that of the integers from below. Its
# negative log-likelihood in nats over the D = 64 pixels, divided by D log 2, is the number of
# bits per pixel a code built on the model would spend; lower is better. Here the grey levels
# run 0 to 16, so a model that knew nothing (uniform over 17 levels) would spend log2(17) =
# 4.09 bits per pixel.
realnvp("eval", "digits", "digits", "--json")

# %%
# Samples at two temperatures
# ---------------------------
# Sampling draws `z ~ N(0, T^2 I)` and maps it back, `x = f^-1(z)`. The full temperature T = 1
# samples the model as it is; T = 0.7 draws from its denser middle: cleaner digits, less
# variety (Glow's "reduced temperature").
flow, _ = load_model(work / "digits")
generator = torch.Generator().manual_seed(0)
fig, axes = plt.subplots(2, 1, figsize=(10, 3))
for ax, t in zip(axes, (1.0, 0.7), strict=True):
    with torch.no_grad():
        x = flow.sample(16, temperature=t, generator=generator)
    row = x.clamp(0, 16).squeeze(1).permute(1, 0, 2).reshape(8, -1)
    ax.imshow(row.numpy(), cmap="gray_r")
    ax.set_title(f"T = {t}")
    ax.axis("off")
fig.tight_layout()

# %%
# Exact reconstructions
# ---------------------
# `encode` maps each image to its latent code and `decode` maps it back: the same image, to
# float32 rounding, because every layer is inverted exactly. (`realnvp plot RUN --out DIR`
# draws samples, reconstructions and a walk through the latent space as PNG files.)
from realnvp.data.images import digits

images = torch.as_tensor(digits().test[:8], dtype=torch.float32)
with torch.no_grad():
    z = flow.encode(images)
    back = flow.decode(z)
print("latent", tuple(z.shape), "max |decode(encode(x)) - x|:", (back - images).abs().max().item())
