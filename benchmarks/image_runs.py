"""README's image results table: train the multi-scale model with the command line exactly as
README shows, evaluate it on the test split, and append one JSON line per run.

    python benchmarks/image_runs.py --out benchmarks/results/image_runs.jsonl            # all
    python benchmarks/image_runs.py --only digits --out benchmarks/results/image_runs.jsonl
    python benchmarks/image_runs.py --only digits-conditional mnist5k-conditional \
        --out benchmarks/results/image_runs.jsonl

The ``-conditional`` runs are the same commands with ``--conditional``: a class-conditional model
p(image | digit) of the same size (plus the label's channels and per-class base), trained for the
same steps, so its test bits/dim (given each test image's label) stands beside the
unconditional one's.

Each run trains into a fresh folder under ``--runs`` (default ``runs/bench``), then records the
command, the parameter count, the training time and steps from the run's ``history.json``, and
the test bits/dim from ``realnvp eval RUN DATA --json``. Run it alone on the machine: the time is
wall-clock training time.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from realnvp.training.checkpoint import load_model

#: README's commands, without --out (added per run)
RUNS = {
    "digits": "realnvp train digits --patience 8",
    "mnist5k": "realnvp train mnist5k --steps 3000 --channels 16 --blocks 1 --patience 8",
}
RUNS.update({f"{name}-conditional": f"{line} --conditional" for name, line in list(RUNS.items())})


def realnvp(*args: str) -> str:
    """Run the realnvp command line in a fresh process; its stdout."""
    command = [sys.executable, "-m", "realnvp", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{result.stderr}")
    return result.stdout


def run(name: str, folder: Path) -> dict:
    command = RUNS[name]
    shutil.rmtree(folder, ignore_errors=True)
    realnvp(*shlex.split(command)[1:], "--out", str(folder), "--no-progress")
    history = json.loads((folder / "history.json").read_text())
    data = name.removesuffix("-conditional")
    result = json.loads(realnvp("eval", str(folder), data, "--json"))
    flow, _ = load_model(folder)
    return {
        "data": data,
        "conditional": name != data,
        "command": f"{command} --out runs/{name}",
        "params": sum(p.numel() for p in flow.parameters()),
        "train_seconds": round(history["seconds"], 1),
        "steps": history["step"][-1],
        "stopped_early": history["stopped_early"],
        "best_step": history["best_step"],
        "test_bits_per_dim": result["bits_per_dim"],
        "test_bits_per_dim_se": result["bits_per_dim_se"],
        "test_images": result["n"],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(RUNS), nargs="+", help="runs (default: all)")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench"), help="run folders")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines file to append to")
    args = parser.parse_args()
    for name in args.only or list(RUNS):
        record = run(name, args.runs / name)
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
