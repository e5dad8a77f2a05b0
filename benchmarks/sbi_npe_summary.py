"""README's sbibm table from ``sbi_npe.py``'s JSON lines: each estimator's mean C2ST ± std over
the observations it scored, beside the sbibm paper's NPE on the same observations, then each
estimator's calibration error.

The paper's per-observation C2ST (NPE = NPE-NSF trained per observation, 10,000 simulations) is
from github.com/sbi-benchmark/results, ``benchmarking_sbi/results/main_paper.csv`` at commit
741183cdece7077453efbedac0fad7e74afa10e5, observations 1 to 10.

    python benchmarks/sbi_npe_summary.py benchmarks/results/sbi_npe.jsonl \\
        > benchmarks/results/sbi_npe_summary.md
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

PAPER_10K = {
    "two_moons": [0.542, 0.571, 0.646, 0.674, 0.588, 0.576, 0.617, 0.599, 0.616, 0.634],
    "gaussian_linear": [0.565, 0.531, 0.534, 0.592, 0.523, 0.532, 0.534, 0.620, 0.534, 0.558],
    "slcp": [0.944, 0.938, 0.799, 0.916, 0.849, 0.883, 0.950, 0.898, 0.932, 0.897],
}
ESTIMATORS = ["realnvp", "realnvp_spline", "zuko_nsf", "zuko_maf", "nflows_maf"]


def main(path: str) -> None:
    runs = {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "run" and record["budget"] == 10_000:
            runs[(record["task"], record["estimator"])] = record
    print("| task (C2ST) | " + " | ".join(ESTIMATORS) + " | sbibm paper NPE-NSF, same obs. |")
    print("|---|" + "---|" * (len(ESTIMATORS) + 1))
    for task, paper in PAPER_10K.items():
        cells, method, observations = [], "", []
        for name in ESTIMATORS:
            r = runs.get((task, name))
            if r is None:
                cells.append("not run")
                continue
            method, observations = r["c2st_method"], r["observations"]
            cells.append(f"{r['c2st_mean']:.3f} ± {r['c2st_std']:.3f}")
        same = [paper[i - 1] for i in observations] or paper
        anchor = f"{statistics.mean(same):.3f} ± {statistics.stdev(same):.3f}"
        print(f"| {task} ({method}) | " + " | ".join(cells) + f" | {anchor} |")
    print()
    print("| task | " + " | ".join(f"{name} calib. err." for name in ESTIMATORS) + " |")
    print("|---|" + "---|" * len(ESTIMATORS))
    for task in PAPER_10K:
        errors = [runs.get((task, name), {}).get("calibration_error") for name in ESTIMATORS]
        print(f"| {task} | " + " | ".join("-" if e is None else f"{e:.3f}" for e in errors) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
