"""Training: a readable loop with evaluation and early stopping, its outputs as callbacks, one
path from data to a fitted flow (in memory, or from a table where it lies), checkpoints and
resume."""

from realnvp.config import TrainConfig
from realnvp.training.callbacks import Checkpoint, MetricsCSV, ProgressBar, TensorBoard
from realnvp.training.checkpoint import CheckpointError, load_model, save_model
from realnvp.training.loop import Callback, Evaluation, History, Trainer, evaluate_nll, fit
from realnvp.training.rows import Table
from realnvp.training.runs import fit_data, make_trainer, train_run

__all__ = [
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "Evaluation",
    "History",
    "MetricsCSV",
    "ProgressBar",
    "Table",
    "TensorBoard",
    "TrainConfig",
    "Trainer",
    "evaluate_nll",
    "fit",
    "fit_data",
    "load_model",
    "make_trainer",
    "save_model",
    "train_run",
]
