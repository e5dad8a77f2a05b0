"""What training reports and how it stops: early stopping, progress output, TensorBoard."""

from __future__ import annotations

import csv
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import StopAt
from realnvp import RealNVP
from realnvp.training import loop, train_run
from realnvp.training.callbacks import ProgressBar, TensorBoard, run_outputs
from realnvp.training.loop import (
    Callback,
    Evaluation,
    TrainConfig,
    Trainer,
    fit,
    flushing_denormals,
)


def tiny_flow() -> RealNVP:
    return RealNVP(2, num_layers=2, hidden_features=8)


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


# -- early stopping ---------------------------------------------------------------------------

#: the validation NLLs the scripted evaluations return, one per evaluation (every 5 steps)
VAL_NLLS = [1.0, 0.9, 0.95, 0.96, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


@pytest.mark.parametrize(
    ("patience", "last_step", "best_step"),
    [(1, 15, 10), (2, 20, 10), (3, 40, 25), (None, 50, 25)],
)
def test_early_stopping_keeps_the_best_weights(
    patience: int | None, last_step: int, best_step: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training stops after ``patience`` evaluations in a row without a better validation NLL
    (never with patience=None) and ends with the weights of the best evaluation. Fails if the
    count is off by one (stopping at ``bad_evals > patience``), if a better NLL does not reset
    it, if patience=None stopped, or if the best weights were not restored at the end."""
    scripted = iter(VAL_NLLS)
    monkeypatch.setattr(loop, "mean_nll", lambda flow, x, context=None: next(scripted))
    flow = tiny_flow()
    weights: dict[int, dict[str, torch.Tensor]] = {}

    class Record(Callback):
        def on_evaluation(self, trainer: Trainer, evaluation: Evaluation) -> None:
            weights[evaluation.step] = {k: v.clone() for k, v in flow.state_dict().items()}

    config = TrainConfig(
        steps=50, batch_size=32, lr=1e-2, schedule="constant", eval_every=5, patience=patience
    )
    history = fit(flow, torch.randn(256, 2), torch.randn(64, 2), config, [Record()])

    assert history.step == list(range(5, last_step + 1, 5)) == sorted(weights)
    assert history.val_nll == VAL_NLLS[: last_step // 5]
    assert history.stopped_early == (patience is not None)
    assert history.best_step == best_step
    assert history.best_val_nll == VAL_NLLS[best_step // 5 - 1]
    final = flow.state_dict()
    assert all(torch.equal(final[k], v) for k, v in weights[best_step].items())
    # training moved the weights after the best evaluation, so restoring them is not a no-op
    assert not all(torch.equal(final[k], v) for k, v in weights[last_step].items())


# -- progress output --------------------------------------------------------------------------


def test_progress_off_a_terminal_prints_one_line_per_evaluation(
    capsys: pytest.CaptureFixture,
) -> None:
    """With stderr not a terminal (captured here), no bar but one plain line per evaluation.
    Fails if the bar were drawn off a terminal (carriage returns in a log file) or the lines
    dropped or showing stale numbers."""
    config = TrainConfig(steps=20, batch_size=32, eval_every=10)
    x, x_val = torch.randn(256, 2), torch.randn(64, 2)
    trainer = Trainer(tiny_flow(), x, x_val, config, [ProgressBar()])
    h = trainer.fit()
    assert capsys.readouterr().err.splitlines() == [
        f"step {s}/20 loss {t:.4f} val_nll {v:.4f}"
        for s, t, v in zip(h.step, h.train_nll, h.val_nll, strict=True)
    ]


def run_in_terminal(args: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run ``python -m realnvp ARGS`` with stderr on a pseudo-terminal; its code and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # rows, columns
    process = subprocess.Popen(
        [sys.executable, "-m", "realnvp", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                process.kill()
                raise TimeoutError(f"realnvp {' '.join(args)} ran past {timeout} s: {output!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the process has exited and closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
    return process.wait(timeout=60), output.decode(errors="replace")


def train_tiny_in_terminal(out: Path, *extra: str) -> str:
    args = ["train", "moons", "--rows", "500", "--steps", "20", "--eval-every", "10"]
    code, output = run_in_terminal(
        [*args, "--layers", "2", "--hidden", "8", "--device", "cpu", "--out", str(out), *extra]
    )
    assert code == 0, output
    assert "trained 20 steps" in output, output
    return output


@pytest.mark.slow
def test_progress_in_a_terminal_is_a_tqdm_bar(tmp_path: Path) -> None:
    """Fails if no bar were drawn on a terminal, or its postfix were missing or stale."""
    output = train_tiny_in_terminal(tmp_path / "run")
    last = read_metrics(tmp_path / "run")[-1]
    bar = (
        rf"100%\|[^\r\n]*\| 20/20 \[[^\]\r\n]*step/s, "
        rf"loss={float(last['train_nll']):.4f}, val_nll={float(last['val_nll']):.4f}\]"
    )
    assert re.search(bar, output), output
    assert "step 10/20" not in output  # the plain lines are for logs, not terminals


@pytest.mark.slow
def test_no_progress_draws_no_bar_in_a_terminal(tmp_path: Path) -> None:
    """Fails if --no-progress were ignored (a bar, or plain lines, on the terminal)."""
    output = train_tiny_in_terminal(tmp_path / "run", "--no-progress")
    # no bar (redrawn after a bare carriage return), no plain progress lines either
    assert not re.search(r"\r(?!\n)|20/20|step/s|loss", output), output


# -- TensorBoard --------------------------------------------------------------------------------


def test_tensorboard_scalars_match_metrics_csv(tmp_path: Path) -> None:
    """After each evaluation, ``RUN/tensorboard`` holds the same NLLs at the same steps as
    ``metrics.csv``: read while training runs, as a TensorBoard watching the run would. Fails if
    the scalars were logged under other tags or steps, swapped, or not flushed (the writer is
    never closed, so until a flush they sit in its queue)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    checked = []

    class Compare(Callback):
        def on_evaluation(self, trainer: Trainer, evaluation: Evaluation) -> None:
            compare(evaluation.step)

    def compare(step: int) -> None:
        rows = read_metrics(tmp_path)
        assert int(rows[-1]["step"]) == step
        events = EventAccumulator(str(tmp_path / "tensorboard"))
        events.Reload()
        assert sorted(events.Tags()["scalars"]) == ["nll/train", "nll/val"]
        for tag, column in (("nll/train", "train_nll"), ("nll/val", "val_nll")):
            logged = events.Scalars(tag)
            assert [e.step for e in logged] == [int(r["step"]) for r in rows], tag
            # TensorBoard keeps float32: the CSV's value rounded to float32, exactly
            assert [e.value for e in logged] == [float(np.float32(r[column])) for r in rows], tag
        checked.append(step)

    config = TrainConfig(steps=20, batch_size=32, eval_every=5)
    x, x_val = torch.randn(256, 2), torch.randn(64, 2)
    Trainer(tiny_flow(), x, x_val, config, [*run_outputs(tmp_path, {}), Compare()]).fit()
    assert checked == [5, 10, 15, 20]


def test_outputs_are_closed_when_training_stops_on_an_error(tmp_path: Path) -> None:
    """A run that raises (here right after the step-10 evaluation) still closes its
    TensorBoard writer, so its events are on disk and no file handle is left open."""
    pytest.importorskip("tensorboard")
    outputs = run_outputs(tmp_path, {})
    board = next(o for o in outputs if isinstance(o, TensorBoard))
    config = TrainConfig(steps=40, batch_size=32, eval_every=10)
    trainer = Trainer(tiny_flow(), torch.randn(256, 2), None, config, [*outputs, StopAt(10)])
    with pytest.raises(StopAt.Stop):
        trainer.fit()
    assert board.writer is None and list((tmp_path / "tensorboard").iterdir())


def test_resuming_a_finished_run_writes_no_new_events_file(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    x = np.random.default_rng(0).normal(size=(100, 2))
    config = TrainConfig(steps=4, eval_every=2)
    train_run(tmp_path, x, {"num_layers": 2, "hidden_features": 4}, config, device="cpu")
    before = sorted((tmp_path / "tensorboard").iterdir())
    train_run(tmp_path, x, resume=True, device="cpu")
    assert sorted((tmp_path / "tensorboard").iterdir()) == before


def test_an_error_in_closing_hides_neither_the_training_error_nor_other_outputs() -> None:
    """A callback that fails to close: the error that stopped training still comes out (a
    NaN loss keeps its one-line message and exit code), and the other callbacks are closed."""
    closed = []

    class BrokenClose(Callback):
        def on_close(self, trainer: Trainer) -> None:
            raise OSError("disk gone")

    class Closes(Callback):
        def on_close(self, trainer: Trainer) -> None:
            closed.append(True)

    config = TrainConfig(steps=40, batch_size=32, eval_every=10)
    outputs = [BrokenClose(), Closes(), StopAt(10)]
    with pytest.raises(StopAt.Stop):
        Trainer(tiny_flow(), torch.randn(256, 2), None, config, outputs).fit()
    assert closed == [True]
    with pytest.raises(OSError, match="disk gone"):  # with nothing else on its way out
        Trainer(tiny_flow(), torch.randn(256, 2), None, config, [BrokenClose()]).fit()


class _Flushing(Callback):
    """Records, at each step, whether the CPU flushes denormal floats to zero."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_step(self, trainer: Trainer) -> None:
        self.seen.append(flushing_denormals())


@pytest.mark.parametrize("caller", [False, True])
def test_training_flushes_denormals_and_gives_the_setting_back(caller: bool) -> None:
    """Weights that decay below float32's normal range made every step up to 8 times slower on
    the CPU (products with denormal operands take a microcode path): training treats them as
    zero, and the caller's own setting is back afterwards, whatever it was."""
    torch.set_flush_denormal(caller)
    try:
        assert flushing_denormals() is caller
        watch = _Flushing()
        x = torch.randn(64, 2)
        fit(tiny_flow(), x, config=TrainConfig(steps=3, batch_size=32), callbacks=[watch])
        assert watch.seen == [True, True, True]
        assert flushing_denormals() is caller
    finally:
        torch.set_flush_denormal(False)
