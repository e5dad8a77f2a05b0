"""The two-moons depth study: how the number of coupling layers changes the learned density, the
training loss and the latent space, with each depth's gap to the exact limit.

``run_moons_study(MoonsStudyConfig(), "results/moons")`` (or ``realnvp study moons --out DIR``)
writes ``fig1_mapping.png`` to ``fig4_latent.png``, ``results.csv``, ``results.md`` and
``config.json``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realnvp import __version__
from realnvp.config import VAL_FRACTION, TrainConfig
from realnvp.data.moons import NOISE, moons, moons_log_density
from realnvp.files import atomic_write
from realnvp.models import Flow, RealNVP
from realnvp.plots import save_figure
from realnvp.plots.moons import (
    DepthResult,
    plot_densities,
    plot_latents,
    plot_losses,
    plot_mapping,
)
from realnvp.training import evaluate_nll, fit_data

COLUMNS = [
    "layers",
    "params",
    "train_seconds",
    "train_nll",
    "val_nll",
    "test_nll",
    "test_nll_se",
    "limit_nll",
    "gap",
    "gap_se",
    "max_inverse_error",
    "best_step",
]


_MODEL = RealNVP.defaults()


@dataclass
class MoonsStudyConfig:
    """Every setting of the study. All depths share one recipe: the same conditioner, optimiser,
    schedule, steps and seeds. The conditioner is the library's default; the recipe is the
    study's own (longer, smaller batches, no early stopping), recorded in ``config.json``."""

    depths: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 50)
    noise: float = NOISE
    n_train: int = 20000  # the last val_fraction of it is held out for validation
    val_fraction: float = VAL_FRACTION
    n_test: int = 10000
    data_seed: int = 0  # make_moons random_state of the training set
    test_seed: int = 1  # make_moons random_state of the test set
    model_seed: int = 0  # torch seed before each model is built
    hidden_features: int = _MODEL["hidden_features"]
    num_hidden_layers: int = _MODEL["num_hidden_layers"]
    activation: str = _MODEL["activation"]
    scale_init: float = _MODEL["scale_init"]
    train: TrainConfig = field(
        default_factory=lambda: replace(RealNVP.recipe, steps=6500, batch_size=256, patience=None)
    )
    figure1_layers: int = 8  # the depth whose mapping Figure 1 shows
    threads: int | None = None  # torch threads; None leaves torch's default

    @classmethod
    def quick(cls) -> MoonsStudyConfig:
        """A run of well under a minute, for tests and a first look."""
        study = cls()
        return replace(
            study,
            depths=(1, 2, 4),
            n_train=2000,
            n_test=1000,
            hidden_features=32,
            train=replace(study.train, steps=300, lr=3e-3, eval_every=25),
            figure1_layers=4,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MoonsStudyConfig:
        d = dict(d)
        d["depths"] = tuple(d["depths"])
        d["train"] = TrainConfig(**d["train"])
        return cls(**d)


def _nearest_moon(x: np.ndarray, noise: float) -> np.ndarray:
    """The moon with the larger exact joint density at each point (0 outer, 1 inner)."""
    return np.argmax(moons_log_density(x, noise, per_moon=True), axis=1)


def _max_inverse_error(flow: Flow, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (flow.decode(flow.encode(x)) - x).abs().max().item()


def _se(v: np.ndarray) -> float:
    return float(v.std(ddof=1) / math.sqrt(len(v)))


@dataclass
class _Data:
    """The study's points: training and validation rows, test rows with their moon labels, and
    the exact density's NLL at each test point."""

    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    limit_test: np.ndarray

    @property
    def limit_nll(self) -> float:
        return float(self.limit_test.mean())


def _data(config: MoonsStudyConfig) -> _Data:
    x_all, _ = moons(config.n_train, config.noise, config.data_seed)
    n_val = max(1, round(config.val_fraction * config.n_train))
    x_test, y_test = moons(config.n_test, config.noise, config.test_seed)
    limit_test = -moons_log_density(x_test, config.noise)  # per-point NLL of the true density
    return _Data(x_all[:-n_val], x_all[-n_val:], x_test, y_test, limit_test)


def _train_depth(config: MoonsStudyConfig, depth: int, data: _Data) -> DepthResult:
    """Train the model of one depth and score it; its table row is ``result.row``."""
    model = {
        "num_layers": depth,
        "hidden_features": config.hidden_features,
        "num_hidden_layers": config.num_hidden_layers,
        "activation": config.activation,
        "scale_init": config.scale_init,
    }
    flow, history = fit_data(
        data.x_train, data.x_val, model, config.train, config.model_seed, device="cpu"
    )
    t_test = flow.prepare(data.x_test)
    test_nll = evaluate_nll(flow, t_test).double().numpy()
    gap = test_nll - data.limit_test
    row = {
        "layers": depth,
        "params": sum(p.numel() for p in flow.parameters()),
        "train_seconds": round(history.seconds, 1),
        "train_nll": evaluate_nll(flow, flow.prepare(data.x_train)).mean().item(),
        "val_nll": history.best_val_nll,
        "test_nll": float(test_nll.mean()),
        "test_nll_se": _se(test_nll),
        "limit_nll": data.limit_nll,
        "gap": float(gap.mean()),
        "gap_se": _se(gap),
        "max_inverse_error": _max_inverse_error(flow, t_test),
        "best_step": history.best_step,
    }
    return DepthResult(depth, flow, row["test_nll"], row["gap"], history, row)


def run_moons_study(
    config: MoonsStudyConfig, out: str | Path, log: Callable[[str], None] = print
) -> list[dict]:
    """Train one Real NVP per depth, score it against the exact limit, and write the figures,
    tables and config into ``out``. Returns the table's rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    data = _data(config)
    log(
        f"exact limit on the {len(data.x_test):,} test points: {data.limit_nll:.4f} nats "
        f"(noise {config.noise})"
    )
    results: list[DepthResult] = []
    for depth in config.depths:
        result = _train_depth(config, depth, data)
        results.append(result)
        row = result.row
        log(
            f"{depth:>3} layers: test NLL {row['test_nll']:.4f} ± {row['test_nll_se']:.4f}, "
            f"gap {row['gap']:+.4f} ± {row['gap_se']:.4f}, {row['train_seconds']:.0f} s"
        )
    rows = [r.row for r in results]
    _write_tables(rows, config, out)
    names = _draw_figures(results, config, data, out)
    seconds = _write_config(config, out, started)
    log(
        f"wrote {', '.join(sorted(names))}, results.csv, results.md, config.json to {out} "
        f"in {seconds:.0f} s"
    )
    return rows


def _draw_figures(
    results: list[DepthResult], config: MoonsStudyConfig, data: _Data, out: Path
) -> list[str]:
    figure1 = next((r for r in results if r.layers == config.figure1_layers), results[-1])
    x_test, y_test, noise = data.x_test, data.y_test, config.noise
    figures = {
        "fig1_mapping.png": plot_mapping(
            figure1.flow,
            x_test[:2000],
            y_test[:2000],
            lambda x: _nearest_moon(x, noise),
            title=f"Real NVP with {figure1.layers} coupling layers on two moons "
            f"(test NLL {figure1.test_nll:.3f}, exact limit {data.limit_nll:.3f})",
            seed=config.model_seed,
        ),
        "fig2_density.png": plot_densities(results, x_test, y_test, data.limit_nll),
        "fig3_loss.png": plot_losses(results, data.limit_nll),
        "fig4_latent.png": plot_latents(results, x_test[:3000], y_test[:3000]),
    }
    for name, fig in figures.items():
        save_figure(fig, out / name, dpi=110)
    return list(figures)


def _write_config(config: MoonsStudyConfig, out: Path, started: float) -> float:
    """``config.json``: the study's settings and the environment; returns the seconds taken."""
    meta: dict[str, Any] = {
        "realnvp": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps({"study": "moons", **config.to_dict(), "environment": meta}, indent=2)
    atomic_write(out / "config.json", lambda tmp: tmp.write_text(text + "\n"))
    return meta["seconds"]


def _write_tables(rows: list[dict], config: MoonsStudyConfig, out: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "results.csv", lambda tmp: tmp.write_text(buffer.getvalue()))
    t = config.train
    lines = [
        f"Two moons, noise {config.noise}: {config.n_train:,} training points "
        f"({config.val_fraction:.0%} held out for validation), {config.n_test:,} test points. "
        f"Every depth: MLP conditioners {config.num_hidden_layers} x {config.hidden_features} "
        f"{config.activation}, Adam lr {t.lr:g} {t.schedule}, batch {t.batch_size}, "
        f"{t.steps:,} steps, weights of the best validation NLL. NLL in nats per point in the raw "
        "data units; gap = test NLL - exact limit NLL on the same test points (± standard errors).",
        "",
        "| layers | params | train s | train NLL | test NLL | exact limit | gap | "
        "max inverse error |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layers']} | {r['params']:,} | {r['train_seconds']:.0f} | {r['train_nll']:.4f} "
            f"| {r['test_nll']:.4f} ± {r['test_nll_se']:.4f} | {r['limit_nll']:.4f} "
            f"| {r['gap']:+.4f} ± {r['gap_se']:.4f} | {r['max_inverse_error']:.1e} |"
        )
    text = "\n".join(lines) + "\n"
    atomic_write(out / "results.md", lambda tmp: tmp.write_text(text))
