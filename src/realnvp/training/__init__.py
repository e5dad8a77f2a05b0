"""Training: a readable loop with evaluation, early stopping, checkpoints and resume."""

from realnvp.training.checkpoint import CheckpointError, load_model, save_model
from realnvp.training.loop import History, TrainConfig, Trainer, evaluate_nll, fit
from realnvp.training.runs import train_run

__all__ = [
    "CheckpointError",
    "History",
    "TrainConfig",
    "Trainer",
    "evaluate_nll",
    "fit",
    "load_model",
    "save_model",
    "train_run",
]
