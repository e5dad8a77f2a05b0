"""
The two-moons depth study
=========================

How deep must a Real NVP be? `realnvp study moons` trains one flow per depth on scikit-learn's
two moons and compares each with the exact density of the data, which no model can beat on
fresh points. The full study (7 depths, 6,500 steps each) takes about 20 minutes on 2 cores; its
figures and table are in the README. Here `--quick` runs three small depths on fewer points in
under a minute, to show what each figure says.
"""

# %%
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt

out = Path(tempfile.mkdtemp()) / "moons"
subprocess.run(
    [sys.executable, "-m", "realnvp", "study", "moons", "--quick", "--out", str(out)],
    check=True,
    capture_output=True,
)
print(sorted(p.name for p in out.iterdir()))


def show(name: str, width: float = 12) -> None:
    """Show one of the study's PNG files."""
    image = mpimg.imread(out / name)
    fig = plt.figure(figsize=(width, width * image.shape[0] / image.shape[1]))
    plt.imshow(image)
    plt.axis("off")
    fig.tight_layout()


# %%
# The table
# ---------
# One row per depth. `gap` is the model's test NLL minus the exact density's NLL on the same
# test points (`realnvp.data.moons_log_density`, by quadrature), with the standard error of
# that paired difference; `max inverse error` is the largest `|f^-1(f(x)) - x|`.
print((out / "results.md").read_text())

# %%
# Figure 1: the mapping
# ---------------------
# The paper's Figure 1 for one model (here the 4-layer one; 8 layers in the full study): data
# with a grid, the grid carried into the latent space by `f`, prior samples with a grid, and that
# grid carried back by `f^-1`.
show("fig1_mapping.png")

# %%
# Figure 2: the learned densities
# -------------------------------
# One coupling layer can only bend one coordinate as a function of the other; a few already
# separate the moons.
show("fig2_density.png")

# %%
# Figure 3: the losses
# --------------------
# Training and validation NLL against step, with the exact limit as a line.
show("fig3_loss.png")

# %%
# Figure 4: the latent codes
# --------------------------
# `f(x)` of test points, each moon in its colour: a good flow fills the standard normal, with
# the two moons side by side.
show("fig4_latent.png")
