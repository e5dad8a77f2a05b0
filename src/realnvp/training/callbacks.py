"""What a training run writes, as ``Trainer`` callbacks: a progress bar, ``metrics.csv``,
TensorBoard scalars and checkpoints. Each reports the NLL in nats and, beside it, the flow's
``metric`` when it has one (bits per dimension for images)."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from realnvp.files import atomic_write
from realnvp.training.checkpoint import save_model, save_training_state
from realnvp.training.loop import Callback, Evaluation, Trainer


def _reported(trainer: Trainer) -> dict[str, Callable[[float], float]]:
    """What the outputs report of an NLL, by short name: the NLL itself, then the flow's
    metric if it has one (``bpd`` for images)."""
    metric = trainer.flow.metric
    return {"nll": float} | ({} if metric is None else {metric.short: metric.of_nll})


class ProgressBar(Callback):
    """A tqdm bar on stderr, its postfix the latest NLLs (or the flow's metric); when stderr is
    not a terminal, one plain line per evaluation instead."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_start(self, trainer: Trainer) -> None:
        if sys.stderr.isatty():
            self.bar = tqdm(
                total=trainer.config.steps,
                initial=trainer.step,
                unit="step",
                dynamic_ncols=True,
                mininterval=0.5,
            )

    def on_step(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_evaluation(self, trainer: Trainer, evaluation: Evaluation) -> None:
        name, convert = list(_reported(trainer).items())[-1]  # the metric, else the NLL
        shown = {"loss" if name == "nll" else name: f"{convert(evaluation.train_nll):.4f}"}
        if evaluation.val_nll is not None:
            shown[f"val_{name}"] = f"{convert(evaluation.val_nll):.4f}"
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
        else:
            print(
                f"step {evaluation.step}/{trainer.config.steps}",
                *(f"{k} {v}" for k, v in shown.items()),
                file=sys.stderr,
            )

    def on_close(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()


class MetricsCSV(Callback):
    """The whole history as a CSV file, rewritten (atomically) at each evaluation."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_evaluation(self, trainer: Trainer, evaluation: Evaluation) -> None:
        h = trainer.history
        columns = {"step": h.step, "train_nll": h.train_nll, "val_nll": h.val_nll, "lr": h.lr}
        for name, convert in list(_reported(trainer).items())[1:]:  # the metric's columns
            columns[f"train_{name}"] = [convert(v) for v in h.train_nll]
            columns[f"val_{name}"] = [convert(v) for v in h.val_nll]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))
        atomic_write(self.path, lambda tmp: tmp.write_text(buffer.getvalue()))


class TensorBoard(Callback):
    """Scalars ``nll/train``, ``nll/val`` (and the metric's) in ``folder``, when the
    tensorboard package is installed; nothing otherwise."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.writer: Any = None
        self.available = True

    def on_evaluation(self, trainer: Trainer, evaluation: Evaluation) -> None:
        if self.writer is None:  # opened at the first evaluation: a run that evaluates
            self.writer = self._open()  # nothing (a finished run resumed) writes no events file
        if self.writer is None:
            return
        for name, convert in _reported(trainer).items():
            self.writer.add_scalar(f"{name}/train", convert(evaluation.train_nll), evaluation.step)
            if evaluation.val_nll is not None:
                self.writer.add_scalar(f"{name}/val", convert(evaluation.val_nll), evaluation.step)
        self.writer.flush()

    def _open(self) -> Any:
        if self.available:
            try:
                from torch.utils.tensorboard import SummaryWriter  # tensorboard is optional
            except ImportError:
                self.available = False
            else:
                return SummaryWriter(str(self.folder))
        return None

    def on_close(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Checkpoint(Callback):
    """A run folder's checkpoints: ``last.safetensors`` (everything ``resume`` needs, ``info``
    included) at every evaluation, then ``model.safetensors``/``model.json`` when the
    validation NLL improves, and while none is finite yet, so a folder with a model always holds
    a training state; at the end, the model files hold the best weights (or the last ones,
    without a finite validation NLL). With ``ema`` in the recipe, the model files hold the
    moving average of the weights, the one validated.

    ``info``: the run's settings (data fingerprint, split, recipe), kept in both files."""

    def __init__(self, run: Path, info: dict[str, Any]):
        self.run = Path(run)
        self.info = info

    def on_evaluation(self, trainer: Trainer, evaluation: Evaluation) -> None:
        state = {**trainer.state(), "run": self.info}
        save_training_state(
            self.run, trainer.flow, trainer.optimizer, state, trainer.best_state, trainer.average
        )
        if evaluation.improved or trainer.best_state is None:
            with trainer.evaluated_weights():  # the moving average, with config.ema
                save_model(self.run, trainer.flow, self.info)

    def on_end(self, trainer: Trainer) -> None:
        save_model(self.run, trainer.flow, self.info)


def run_outputs(run: Path, info: dict[str, Any], progress: bool = False) -> list[Callback]:
    """What ``train_run`` writes into a run folder: checkpoints, ``metrics.csv``, TensorBoard
    scalars in ``tensorboard/``, and a progress bar if ``progress``."""
    run = Path(run)
    outputs = [
        Checkpoint(run, info),
        MetricsCSV(run / "metrics.csv"),
        TensorBoard(run / "tensorboard"),
    ]
    return outputs + ([ProgressBar()] if progress else [])
