"""Tables larger than memory: peak memory and training steps/s of ``realnvp train`` against the
rows on disk.

For each size (rows of 6 float32 columns in a .npy file, made once under ``--dir``) it runs
``realnvp train FILE`` in a fresh process, with the same model and batch at every size (so only
the data path changes), and records the process's peak resident memory (``ru_maxrss``) and the
training steps per second (steps after the first 10, timed around the optimizer step and the
batch's gathering). Beside each file read in place it trains on the same rows held in memory (the
same table as a .npz file, which ``train`` loads whole), up to ``--in-memory-max`` rows, and with
``--processes 4`` under ``torchrun`` (gloo), where every process reports its own peak.

    python benchmarks/large_tables.py --rows 100000 1000000 10000000 100000000 --processes 1 4 \
        --out benchmarks/results/large_tables.jsonl
    python benchmarks/large_tables.py --report benchmarks/results/large_tables.jsonl

Run it alone on the machine: steps/s of processes sharing cores mean little.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COLUMNS = 6
#: the run every size gets: only the rows change
TRAIN = ["--layers", "4", "--hidden", "64", "--coupling", "affine", "--batch-size", "256"]
TRAIN += ["--eval-every", "100000", "--patience", "100000", "--no-progress"]

#: run inside each training process: the CLI, with the training step timed, then the peak
WRAPPER = r"""
import json, os, resource, sys, time
from realnvp.training import loop

times = []
step = loop.Trainer._step
def timed(self, x, context=None):
    out = step(self, x, context)
    times.append(time.perf_counter())
    return out
loop.Trainer._step = timed
from realnvp.cli import main
code = main(sys.argv[1:])
warm = times[10:]
rate = (len(warm) - 1) / (warm[-1] - warm[0]) if len(warm) > 1 else None
rank = int(os.environ.get("RANK", "0"))
with open(os.path.join(os.environ["RESULTS"], f"rank{rank}.json"), "w") as f:
    json.dump({
        "rank": rank,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps_per_s": rate,
    }, f)
sys.exit(code)
"""


def make_table(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` rows of a 6-column table (a correlated Gaussian with a bent column), written in
    blocks of a million rows so that making it takes bounded memory."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(COLUMNS, COLUMNS)) / np.sqrt(COLUMNS)
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, "w+", np.float32, (rows, COLUMNS))
    for start in range(0, rows, 1_000_000):
        z = rng.normal(size=(min(1_000_000, rows - start), COLUMNS))
        z[:, 1] += 0.5 * z[:, 0] ** 2
        out[start : start + len(z)] = z @ mix
    out.flush()
    del out
    os.replace(tmp, path)


def train(data: Path, steps: int, processes: int, run: Path) -> list[dict]:
    """One training run; the records of its processes."""
    args = ["train", str(data), "--out", str(run), "--steps", str(steps), *TRAIN]
    args += ["--val-fraction", "0.001", "--device", "cpu"]
    results = Path(tempfile.mkdtemp())
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["RESULTS"] = str(results)
    script = results / "wrapper.py"
    script.write_text(WRAPPER)
    launch = [sys.executable, str(script)]
    if processes > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launch += [f"--nproc_per_node={processes}", str(script)]
    start = time.perf_counter()
    done = subprocess.run([*launch, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    out = [json.loads(p.read_text()) for p in results.glob("rank*.json")]
    return [{**r, "wall_s": round(wall, 1)} for r in sorted(out, key=lambda r: r["rank"])]


def measure(args: argparse.Namespace) -> None:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    for rows in sorted({*args.rows, *([20_000] if args.baseline else [])}):
        npy = folder / f"rows_{rows}.npy"
        make_table(npy, rows)
        sources = [("npy, in place", npy)]
        if rows <= args.in_memory_max:
            npz = folder / f"rows_{rows}.npz"
            if not npz.exists():
                np.savez(npz, x=np.load(npy))
            sources.append(("npz, in memory", npz))
        for repeat in range(args.repeats):  # the two sources interleaved, so drift hits both
            for how, data in sources:
                for processes in args.processes if repeat == 0 else [1]:
                    record = run_once(folder, rows, how, data, processes, args.steps)
                    record["repeat"] = repeat
                    print(json.dumps(record), flush=True)
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(json.dumps(record) + "\n")


def run_once(folder: Path, rows: int, how: str, data: Path, processes: int, steps: int) -> dict:
    run = Path(tempfile.mkdtemp(dir=folder)) / "run"
    records = train(data, steps, processes, run)
    subprocess.run(["rm", "-rf", str(run.parent)], check=False)
    return {
        "rows": rows,
        "columns": COLUMNS,
        "file_mb": round(data.stat().st_size / 2**20, 1),
        "data": how,
        "processes": processes,
        "steps": steps,
        "peak_mb": [round(r["peak_mb"], 1) for r in records],
        "steps_per_s": [round(r["steps_per_s"], 2) for r in records],
        "wall_s": records[0]["wall_s"],
        "threads": os.environ.get("OMP_NUM_THREADS", "1"),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }


def report(path: str) -> str:
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    runs: dict[tuple, list[dict]] = {}
    for r in records:
        runs.setdefault((r["rows"], r["data"], r["processes"]), []).append(r)
    peak = {k: max(max(r["peak_mb"]) for r in v) for k, v in runs.items()}
    rate = {k: float(np.median([r["steps_per_s"][0] for r in v])) for k, v in runs.items()}
    lines = [
        "| rows | file | data | processes | peak memory per process | vs 20,000 rows | "
        "steps/s (runs) | vs in memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (rows, how, processes), v in runs.items():
        extra = peak[(rows, how, processes)] - peak.get((20_000, how, processes), math.nan)
        memory = rate.get((rows, "npz, in memory", processes))
        ratio = f"{rate[(rows, how, processes)] / memory:.2f}x" if memory and "npy" in how else "-"
        lines.append(
            f"| {rows:,} | {v[0]['file_mb']:,.0f} MB | {how} | {processes} | "
            f"{peak[(rows, how, processes)]:,.0f} MB | {extra:+,.0f} MB | "
            f"{rate[(rows, how, processes)]:.1f} ({len(v)}) | {ratio} |"
        )
    first = records[0]
    lines.append("")
    lines.append(
        f"{first['steps']} steps, batch 256, 4 affine couplings of 2x64, "
        f"{first['threads']} thread(s) per process, {first['cpus']} cores; peak memory is the "
        "process's peak resident set (ru_maxrss), with 4 processes the largest of the 4; "
        "steps/s of rank 0, the median over the runs, the two sources interleaved."
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--processes", type=int, nargs="+", default=[1])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=1, help="one-process runs of each source")
    p.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="leave out the 20,000-row run that the others are compared with",
    )
    p.add_argument("--in-memory-max", type=int, default=10_000_000)
    p.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "realnvp-large-tables"))
    p.add_argument("--out", help="append one JSON line per run to this file")
    p.add_argument("--report", help="print the Markdown table of a results file")
    args = p.parse_args()
    if args.report:
        print(report(args.report))
    else:
        measure(args)


if __name__ == "__main__":
    main()
