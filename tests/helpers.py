"""Test helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from realnvp.training import Callback, Evaluation, Trainer


@torch.no_grad()
def randomize(module: nn.Module, std: float = 0.3, seed: int = 0) -> nn.Module:
    """Give every parameter a random non-identity value (zero-initialised last layers and tanh
    scales included), so no check passes only because the map is the identity."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if name.endswith("scale"):
            noise = torch.rand(p.shape, generator=g, dtype=torch.float64)
            p.copy_(0.5 + noise)
        else:
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * std)
    return module


class StopAt(Callback):
    """Stop training with ``StopAt.Stop`` right after the evaluation at ``step`` (and the
    outputs before this callback in the list), as a crash there would."""

    class Stop(Exception):
        pass

    def __init__(self, step: int):
        self.step = step

    def on_evaluation(self, trainer: Trainer, evaluation: Evaluation) -> None:
        if evaluation.step == self.step:
            raise StopAt.Stop


def full_and_resumed(
    tmp_path, x, model: dict, config, at: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The saved models of a run trained straight through and of the same run stopped after
    its checkpoint at step ``at`` and resumed (``train_run`` in ``tmp_path``), as state dicts."""
    from realnvp.training.checkpoint import load_model
    from realnvp.training.runs import train_run

    train_run(tmp_path / "full", x, model, config, device="cpu")
    with pytest.raises(StopAt.Stop):
        train_run(tmp_path / "cut", x, model, config, device="cpu", callbacks=[StopAt(at)])
    train_run(tmp_path / "cut", x, model, config, resume=True, device="cpu")
    full = load_model(tmp_path / "full")[0].state_dict()
    return full, load_model(tmp_path / "cut")[0].state_dict()


def fails(args: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    """Run the command line, check it failed cleanly with ``code``, and return its one line of
    stderr."""
    from realnvp.cli import main

    assert main(args) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]
