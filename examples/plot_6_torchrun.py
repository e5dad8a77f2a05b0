"""
Training on several processes with torchrun
===========================================

`realnvp train` runs under PyTorch's own launcher, `torchrun`, with DistributedDataParallel:
nccl and one GPU per process on CUDA, gloo on CPU. `--batch-size` is the global batch: each of
the N processes trains on its share of the batch a single process would draw, and the gradients
are averaged, so N processes follow the single-process run. Here two CPU processes train on the
two moons beside one process with the same seed, and their loss curves agree.
"""

# %%
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

work = Path(tempfile.mkdtemp())
train = [
    "-m",
    "realnvp",
    "train",
    "moons",
    "--rows",
    "4000",
    "--hidden",
    "32",
    "--steps",
    "60",
    "--eval-every",
    "20",
    "--batch-size",
    "256",
    "--no-progress",
    "--seed",
    "0",
]
launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

print("$ torchrun --standalone --nproc_per_node 2", " ".join(train[1:]), "--out two")
subprocess.run(
    [*launcher, *train, "--out", str(work / "two")],
    check=True,
    capture_output=True,
    env={"OMP_NUM_THREADS": "1", **__import__("os").environ},
)
print("$ python", " ".join(train), "--out one")
_ = subprocess.run(
    [sys.executable, *train, "--out", str(work / "one")], check=True, capture_output=True
)

# %%
# The two runs
# ------------
# `metrics.csv` holds the training loss (the mean over the steps since the last evaluation)
# and the validation NLL at each evaluation; only rank 0 writes the run folder.
one = pd.read_csv(work / "one" / "metrics.csv")
two = pd.read_csv(work / "two" / "metrics.csv")
loss = "val_nll"
print(
    pd.DataFrame(
        {
            "step": one["step"],
            "1 process": one[loss],
            "2 processes": two[loss],
            "difference": two[loss] - one[loss],
        }
    ).to_string(index=False)
)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(one["step"], one[loss], "o-", label="1 process")
ax.plot(two["step"], two[loss], "x--", label="2 processes (gloo)")
ax.set_xlabel("step")
ax.set_ylabel(loss)
ax.legend()
fig.tight_layout()

# %%
# On GPUs and machines
# --------------------
# On one machine with 4 GPUs: `torchrun --standalone --nproc_per_node 4 -m realnvp train
# mnist5k --out runs/mnist --batch-size 256`. On 2 machines with 8 GPUs each, run on every
# machine `torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint
# HOST:29500 --rdzv-id mnist-1 -m realnvp train ~/data/mnist --out runs/mnist --batch-size
# 1024`. `--resume` restarts every process from the run folder.
