"""What ``ContextAffine`` does for spline couplings when the context scales x far beyond their
bound: the conditional Gaussian of ``tests/test_conditional.py`` (x1 | c ~ N(c, 0.1^2),
x2 | c ~ N(0, e^{2c}), c ~ N(0, 1); 3,600 training pairs, 400 for validation, 2,000 test pairs),
4 layers of width 32 trained 600 steps (the test's settings), test NLL minus the exact
conditional NLL (± its paired standard error), for spline couplings with and without a
``ContextAffine`` first and for affine couplings.

    python benchmarks/context_affine.py --out benchmarks/results/context_affine.jsonl
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from records import log, versions

from realnvp.config import TrainConfig
from realnvp.training.runs import fit_data

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_conditional import conditional_gaussian, exact_log_p

MODELS = {
    "spline + ContextAffine (the default's layers)": {"coupling": "spline"},
    "spline alone": {"coupling": "spline", "context_affine": False},
    "affine": {"coupling": "affine", "context_affine": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, c = conditional_gaussian(4000, seed=0)
    x_test, c_test = conditional_gaussian(2000, seed=1)
    exact = exact_log_p(x_test, c_test)
    for seed in args.seeds:
        for name, options in MODELS.items():
            start = time.perf_counter()
            model = {"num_layers": 4, "hidden_features": 32, **options}
            config = TrainConfig(steps=600, eval_every=100, seed=seed)
            flow, _ = fit_data(
                x[:3600], x[3600:], model, config, seed=seed, context_train=c[:3600],
                context_val=c[3600:],
            )  # fmt: skip
            with torch.no_grad():
                lp = flow.log_prob(flow.as_input(x_test), c_test).double().numpy()
            diff = exact - lp  # -log q + log p, per test pair
            record = {
                "model": name,
                "options": model,
                "seed": seed,
                "gap": float(diff.mean()),
                "gap_se": float(diff.std(ddof=1) / math.sqrt(len(diff))),
                "seconds": round(time.perf_counter() - start, 1),
                "threads": 1,
                "versions": versions(),
            }
            print(f"{name}, seed {seed}: gap {diff.mean():+.4f} ± {record['gap_se']:.4f}")
            log(args.out, record)


if __name__ == "__main__":
    main()
