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

from sbi_npe import (
    ESTIMATORS,
    LONGEST_FIRST,
    NUM_OBSERVATIONS,
    PAPER_NPE,
    load,
    recipe,
)

PAPER_10K = {
    "two_moons": [0.542, 0.571, 0.646, 0.674, 0.588, 0.576, 0.617, 0.599, 0.616, 0.634],
    "gaussian_linear": [0.565, 0.531, 0.534, 0.592, 0.523, 0.532, 0.534, 0.620, 0.534, 0.558],
    "slcp": [0.944, 0.938, 0.799, 0.916, 0.849, 0.883, 0.950, 0.898, 0.932, 0.897],
}


def main(path: str) -> None:
    records = load([path])
    first = [r for r in records if r["seed"] == 0]
    runs = {(r["task"], r["budget"], r["estimator"], recipe(r)): r for r in first}
    settings = sorted({(b, how) for _, b, _, how in runs}, key=lambda k: (k[0], k[1] != "sbi", k))
    names = [e for e in ESTIMATORS if any(k[2] == e for k in runs)]
    for budget, how in settings:
        table(runs, budget, how)
        print()
    projections(runs)
    measured(path)
    repeats(path)
    seeds(records)
    recipes(runs)
    print("| task, simulations, recipe | " + " | ".join(f"{e} calib. err." for e in names) + " |")
    print("|---|" + "---|" * len(names))
    for budget, how in settings:
        for task in PAPER_10K:
            errors = [runs.get((task, budget, e, how), {}).get("calibration_error") for e in names]
            if any(e is not None for e in errors):
                cells = " | ".join("-" if e is None else f"{e:.3f}" for e in errors)
                print(f"| {task}, {budget:,}, {how} | {cells} |")


def table(runs: dict, budget: int, how: str) -> None:
    """Mean C2ST ± std per task and estimator at one simulation budget and training recipe
    (the estimators run there); the paper's NPE beside them: per observation at 10,000
    simulations, its mean and std over all 10 at 100,000 (only those are published)."""
    names = [e for e in ESTIMATORS if any(k[1:] == (budget, e, how) for k in runs)]
    anchor_head = "sbibm paper NPE-NSF, same obs." if budget == 10_000 else "sbibm paper NPE-NSF"
    print(
        f"| task (C2ST), {budget:,} simulations, recipe {how} | "
        + " | ".join(names)
        + f" | {anchor_head} |"
    )
    print("|---|" + "---|" * (len(names) + 1))
    for task, paper in PAPER_10K.items():
        cells, method, observations = [], "", []
        for name in names:
            r = runs.get((task, budget, name, how))
            if r is None:
                cells.append("not run")
                continue
            method, observations = r["c2st_method"], r["observations"]
            cells.append(f"{r['c2st_mean']:.3f} ± {r['c2st_std']:.3f}")
        if not method:
            continue  # no estimator scored this task at this budget
        anchor = "not quoted"
        if budget == 10_000:
            same = [paper[i - 1] for i in observations] or paper
            anchor = f"{statistics.mean(same):.3f} ± {statistics.stdev(same):.3f}"
        elif (task, budget) in PAPER_NPE and len(observations) == NUM_OBSERVATIONS:
            anchor = "{:.3f} ± {:.3f}".format(*PAPER_NPE[task, budget])  # its 10 observations
        print(f"| {task} ({method}) | " + " | ".join(cells) + f" | {anchor} |")
    rs = [r for k, r in runs.items() if k[1] == budget and k[3] == how]
    every = sum(r["seconds"] for r in rs)
    both = sum(r["seconds"] for r in rs if r["estimator"] in PAIRED)
    ran = {r["estimator"] for r in rs} >= set(PAIRED)
    alone = f", {both:,.0f} for {' and '.join(PAIRED)} alone" if ran else ""
    print(f"\nSeconds of one thread, training and scoring included: {every:,.0f}{alone}.")
    pairs = [[runs.get((task, budget, name, how)) for name in PAIRED] for task in PAPER_10K]
    lines = [f"- {task}: {paired(*p)}" for task, p in zip(PAPER_10K, pairs, strict=True) if all(p)]
    if lines:
        print("\n" + "\n".join(lines))


def recipes(runs: dict) -> None:
    """Mean C2ST under sbi's recipe and under the regularized one, on the observations both
    scored, for each task, budget and estimator run both ways."""
    rows = []
    for (task, budget, name, how), r in sorted(runs.items()):
        other = runs.get((task, budget, name, "sbi"))
        if how == "sbi" or other is None:
            continue
        shared = sorted(set(r["observations"]) & set(other["observations"]))
        a, b = (
            statistics.mean(dict(zip(x["observations"], x["c2st"], strict=True))[i] for i in shared)
            for x in (other, r)
        )
        rows.append(
            f"| {task}, {budget:,} | {name} | {len(shared)} | {a:.3f} | {b:.3f} | {b - a:+.3f} |"
        )
    if rows:
        print(
            "| task, simulations | estimator | observations | C2ST, sbi's recipe "
            "| with ema, wd | change |"
        )
        print("|---|---|---|---|---|---|")
        print("\n".join(rows) + "\n")


#: the comparison the issue sets: the library's default against zuko's NSF
PAIRED = ("realnvp_default", "zuko_nsf")


def paired(a: dict, b: dict) -> str:
    """``a``'s C2ST minus ``b``'s, mean ± standard error over the observations both scored."""
    shared = sorted(set(a["observations"]) & set(b["observations"]))
    ca, cb = (dict(zip(r["observations"], r["c2st"], strict=True)) for r in (a, b))
    diffs = [ca[i] - cb[i] for i in shared]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return (
        f"{a['estimator']} - {b['estimator']} = {statistics.mean(diffs):+.3f} ± {se:.3f} "
        f"(paired over {len(diffs)} observations)"
    )


def seeds(records: list[dict]) -> None:
    """Where the paired estimators ran with several seeds (the tables above show seed 0): each
    seed's C2ST and paired difference, and the mean difference over seeds with its standard
    error across seeds."""
    by_setting: dict[tuple, dict[int, dict[str, dict]]] = {}
    for r in records:
        if r["estimator"] in PAIRED:
            key = (r["task"], r["budget"], recipe(r))
            by_setting.setdefault(key, {}).setdefault(r["seed"], {})[r["estimator"]] = r
    for (task, budget, how), runs in sorted(by_setting.items()):
        both = {s: rs for s, rs in sorted(runs.items()) if len(rs) == len(PAIRED)}
        if len(both) < 2:
            continue
        print(f"Seeds, {task}, {budget:,} simulations, recipe {how}:\n")
        diffs = []
        for seed, rs in both.items():
            a, b = (rs[name] for name in PAIRED)
            diffs.append(a["c2st_mean"] - b["c2st_mean"])
            print(
                f"- seed {seed}: {a['c2st_mean']:.3f} against {b['c2st_mean']:.3f}; {paired(a, b)}"
            )
        se = statistics.stdev(diffs) / len(diffs) ** 0.5
        print(
            f"- over {len(diffs)} seeds: {' - '.join(PAIRED)} = "
            f"{statistics.mean(diffs):+.3f} ± {se:.3f} (standard error across seeds)\n"
        )


def projected_jobs(runs: dict, budget: int, how: str, names: tuple[str, ...], jobs: int = 2):
    """Minutes of wall clock that ``sbi_npe.py --jobs`` would take for ``names`` on every task,
    from the records' seconds: its order (``LONGEST_FIRST``, then ``names``), each run to the
    first free process. None where a run is missing."""
    units = [(t, e) for t in LONGEST_FIRST for e in names]
    if any((t, budget, e, how) not in runs for t, e in units):
        return None
    free = [0.0] * jobs
    for t, e in units:
        free[free.index(min(free))] += runs[t, budget, e, how]["seconds"]
    return max(free) / 60


def projections(runs: dict) -> None:
    """The ``--jobs 2`` wall clock of the 10,000-simulation ema table, projected."""
    how = "ema 0.995, wd 0.003"
    for names in (PAIRED, (*PAIRED[:1], "zuko_nsf", "zuko_maf", "nflows_maf")):
        minutes = projected_jobs(runs, 10_000, how, names)
        if minutes is not None:
            print(
                f"- --jobs 2, 10,000 simulations, {how}, {' + '.join(names)}: "
                f"{minutes:.1f} min projected from the records"
            )
    print()


def repeats(path: str) -> None:
    """Every run of a setting that ran more than once (the same task, budget, estimator, recipe
    and seed; the tables above show the last), oldest first: how much one setting moves."""
    with open(path) as f:
        records = [json.loads(line) for line in f if '"kind": "run"' in line]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["task"], r["budget"], r["estimator"], recipe(r), r["seed"])
        groups.setdefault(key, []).append(r)
    lines = []
    for (task, budget, name, how, seed), rs in groups.items():
        if len(rs) > 1:
            runs = "; ".join(
                f"{r['c2st_mean']:.3f} (epochs {r['train']['epochs']}, training "
                f"{r['train']['seconds']:.0f} s, {r['time']})"
                for r in rs
            )
            lines.append(f"- {task}, {budget:,}, {how}, {name}, seed {seed}: {runs}")
    if lines:
        print("Runs of the same setting (C2ST, oldest first):\n")
        print("\n".join(lines) + "\n")


def how(jobs: dict) -> str:
    """A ``jobs`` record's training recipe (records before it held the protocol held its ema and
    weight decay at the top level, the learning rate constant)."""
    return recipe(jobs if "protocol" in jobs else {"protocol": jobs})


def measured(path: str) -> None:
    """The wall clock of each ``sbi_npe.py --jobs`` command as it ran (its ``jobs`` record)."""
    with open(path) as f:
        records = [json.loads(line) for line in f if '"kind": "jobs"' in line]
    for r in records:
        print(
            f"- --jobs {r['jobs']}, {', '.join(f'{b:,}' for b in r['budgets'])} simulations, "
            f"{how(r)}, {' + '.join(r['estimators'])} on "
            f"{', '.join(r['tasks'])}, C2ST engine {r['c2st_engine']}: "
            f"{r['seconds'] / 60:.1f} min measured ({r['time']})"
        )
    if records:
        print()


if __name__ == "__main__":
    main(sys.argv[1])
