"""The training loop: Adam on the exact negative log-likelihood, read top to bottom.

``fit(flow, x_train, x_val, config)`` trains in memory. ``Trainer`` is the same loop with a run
folder: metrics, checkpoints every evaluation, early stopping, and ``resume``.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from realnvp.errors import ConfigError
from realnvp.files import atomic_write
from realnvp.flows import Flow
from realnvp.training import distributed

Callback = Callable[[int, float, "float | None"], None]


@dataclass
class TrainConfig:
    """How to train: every setting that changes the result, so a run can be repeated.

    ``schedule`` is ``"cosine"`` (learning rate annealed to 0 over ``steps``) or ``"constant"``.
    ``patience``: stop after this many evaluations without a better validation NLL (None: never).
    ``scale_l2``: weight of the flow's ``regularization()`` (the image model's L2 on weight-norm
    magnitudes, 5e-5 in the paper's code), added to the loss; 0 for none.
    ``bf16``: run the training forward pass under bfloat16 autocast (convolutions and matrix
    multiplies in bf16, the coupling arithmetic and log-dets in float32); evaluation stays float32.
    ``compile``: ``flow.compile()`` before training (torch.compile; faster steps after a one-off
    compilation).
    """

    steps: int = 5000
    batch_size: int = 512
    lr: float = 1e-3
    schedule: str = "cosine"
    weight_decay: float = 0.0
    grad_clip: float | None = None
    scale_l2: float = 0.0
    bf16: bool = False
    compile: bool = False
    eval_every: int = 100
    patience: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.scale_l2 < 0:
            raise ConfigError(f"scale_l2 must be non-negative, got {self.scale_l2}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be at least 1, got {self.patience}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    """What happened during training: NLLs (nats per example) every ``eval_every`` steps."""

    step: list[int] = field(default_factory=list)
    train_nll: list[float] = field(default_factory=list)  # mean over the steps since last record
    val_nll: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_step: int = 0
    best_val_nll: float = math.inf
    seconds: float = 0.0
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


#: what one evaluation batch may hold, in input values (rows times values per row)
EVAL_VALUES = 2**20


def eval_batch_size(x: Tensor) -> int:
    """Rows per evaluation batch: ``2**20`` input values at most and 65,536 rows at most, so
    memory stays bounded whatever the data (65,536 two-column rows; 1,337 MNIST images; 341
    CIFAR-10 images through the ResNets)."""
    per_row = max(1, x[0].numel()) if len(x) else 1
    return max(1, min(65536, EVAL_VALUES // per_row))


@torch.no_grad()
def evaluate_nll(flow: Flow, x: Tensor, batch_size: int | None = None) -> Tensor:
    """Per-example negative log-likelihood of ``x`` in evaluation mode, in batches of
    ``batch_size`` rows (default ``eval_batch_size(x)``): (N, ...) -> (N,)."""
    with flow.evaluating():
        return torch.cat([-flow.log_prob(b) for b in x.split(batch_size or eval_batch_size(x))])


def mean_nll(flow: Flow, x: Tensor) -> float:
    """The mean NLL of ``x``; under DistributedDataParallel each rank scores ``x[rank::N]`` and
    the sums are all-reduced, so every rank gets the NLL of all of ``x``."""
    n, r = distributed.world_size(), distributed.rank()
    if n == 1:
        return evaluate_nll(flow, x).mean().item()
    nll = evaluate_nll(flow, x[r::n]).double()
    total = distributed.all_reduce_sum(torch.stack([nll.sum(), nll.new_tensor(len(nll))]))
    return (total[0] / total[1]).item()


def make_optimizer(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where this torch supports it (CPU and CUDA from
    torch 2.4), else the multi-tensor version; the same update rule either way."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def batch_indices(n: int, batch_size: int, seed: int, start_step: int = 0) -> Iterator[Tensor]:
    """Mini-batch indices for steps ``start_step, start_step + 1, ...``.

    Each epoch is a fresh permutation drawn from ``(seed, epoch)`` alone, so a resumed run sees
    exactly the batches an uninterrupted one would. The last short batch of an epoch is dropped.
    """
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1_000_003 * epoch))
        for j in range(k, per_epoch):
            yield perm[j * batch_size : (j + 1) * batch_size]
        step = (epoch + 1) * per_epoch


class Trainer:
    """Maximum-likelihood training of a flow, with evaluation, early stopping and checkpoints.

    Args:
        flow: the model; trained in place, and left with the weights of its best validation NLL.
        x_train, x_val: data tensors, (N, ...) each; ``x_val`` may be None.
        config: the recipe.
        run: a folder for ``metrics.csv`` and checkpoints, or None to train in memory.
        save_model: called with the flow whenever the validation NLL improves (or at the end,
            without validation); the CLI writes ``model.safetensors`` there.
        callback: called after each evaluation with ``(step, train_nll, val_nll)``.
        progress: show a progress bar on stderr.
        batch_transform: applied to each training batch with its step number, e.g. a
            ``Dequantizer`` that adds fresh noise to image batches.
        dims: report bits per dimension over ``dims`` dimensions beside the NLL (images).
        run_info: JSON-friendly settings of the run (data fingerprint, split, ...), kept in the
            training state so that ``resume`` needs nothing but ``run/last.safetensors``.
    """

    def __init__(
        self,
        flow: Flow,
        x_train: Tensor,
        x_val: Tensor | None = None,
        config: TrainConfig | None = None,
        run: Path | None = None,
        save_model: Callable[[Flow], None] | None = None,
        callback: Callback | None = None,
        progress: bool = False,
        batch_transform: Callable[[Tensor, int], Tensor] | None = None,
        dims: int | None = None,
        run_info: dict[str, Any] | None = None,
    ):
        self.flow = flow
        self.run_info = run_info or {}
        self.batch_transform = batch_transform
        self.dims = dims
        self.config = config or TrainConfig()
        self.device = flow.device
        self.x_train = x_train.to(self.device)
        self.x_val = None if x_val is None else x_val.to(self.device)
        self.run = None if run is None else Path(run)
        self.save_model = save_model
        self.callback = callback
        self.progress = progress
        self.optimizer = make_optimizer(flow.parameters(), self.config.lr, self.config.weight_decay)
        if self.config.compile:
            flow.compile()
        # Under torchrun: DistributedDataParallel averages the gradients; rank 0 writes files.
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.model: torch.nn.Module = flow
        if self.world > 1:
            if self.config.batch_size % self.world:
                raise ConfigError(
                    f"the batch size {self.config.batch_size} is the global batch and must be "
                    f"divisible by the {self.world} processes"
                )
            from torch.nn.parallel import DistributedDataParallel

            # The batch norms all-reduce their own moments (realnvp.collectives), on CPU too.
            ids = [self.device] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(flow, device_ids=ids)
            if self.rank != 0:
                self.run, self.save_model, self.progress = None, None, False
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, self.config.steps)
            if self.config.schedule == "cosine"
            else None
        )
        self.history = History()
        self.step = 0
        self.bad_evals = 0
        self.best_state: dict[str, Tensor] | None = None

    # -- resuming -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The JSON part of the training state (tensors travel separately)."""
        return {
            "step": self.step,
            "bad_evals": self.bad_evals,
            "history": self.history.to_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "config": self.config.to_dict(),
            "run": self.run_info,
        }

    def load_state(
        self, state: dict[str, Any], optimizer_state: dict, best: dict[str, Tensor] | None
    ) -> None:
        """Continue from a saved state; the flow must already hold the saved weights."""
        self.step = state["step"]
        self.bad_evals = state["bad_evals"]
        self.history = History(**state["history"])
        self.optimizer.load_state_dict(optimizer_state)
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.best_state = best

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> History:
        """Train until ``config.steps`` or early stopping; returns the history."""
        config, flow = self.config, self.flow
        batches = batch_indices(len(self.x_train), config.batch_size, config.seed, self.step)
        window, window_steps = 0.0, 0
        bar = self._progress_bar()
        flow.train()
        start = time.perf_counter() - self.history.seconds
        while self.step < config.steps and not self.history.stopped_early:
            index = next(batches)[self.rank :: self.world]  # this rank's share of the batch
            x = self.x_train[index.to(self.device)]
            if self.batch_transform is not None:
                x = self.batch_transform(x, self.step)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=config.bf16):
                loss = -self.model(x).float().mean()
            self._check_finite(loss)
            self.optimizer.zero_grad(set_to_none=True)
            if config.scale_l2 > 0:
                (loss + config.scale_l2 * flow.regularization()).backward()
            else:
                loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(flow.parameters(), config.grad_clip)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.step += 1
            window += loss.item()
            window_steps += 1
            if bar is not None:
                bar.update(1)
            if self.step % config.eval_every == 0 or self.step == config.steps:
                self.history.seconds = time.perf_counter() - start
                if self.world > 1:  # the global batch's mean loss
                    total = torch.tensor(window, dtype=torch.float64, device=self.device)
                    window = distributed.all_reduce_sum(total).item() / self.world
                self._evaluate(window / window_steps, bar)
                window, window_steps = 0.0, 0
        if bar is not None:
            bar.close()
        self.history.seconds = time.perf_counter() - start
        if self.best_state is not None:
            flow.load_state_dict(self.best_state)
        if self.save_model is not None:  # the best weights, or the last without a finite val NLL
            self.save_model(flow)
        return self.history

    def _check_finite(self, loss: Tensor) -> None:
        """Stop on a NaN or infinite loss, on every process at once: each rank learns whether
        any rank's loss is bad before anyone takes the step (one all-reduce of a flag), so no
        rank is left waiting in the next collective."""
        bad = torch.logical_not(torch.isfinite(loss.detach())).to(torch.float64)
        if self.world > 1:
            bad = distributed.all_reduce_sum(bad.reshape(1)).reshape(())
        if bad.item() > 0:
            where = "" if self.world == 1 else f" on {int(bad.item())} of {self.world} processes"
            raise FloatingPointError(
                f"the training loss became {loss.item() if self.world == 1 else 'NaN or inf'}"
                f"{where} at step {self.step + 1}; the last good checkpoint is kept "
                "(try a lower learning rate)"
            )

    def _evaluate(self, train_nll: float, bar) -> None:
        h, config = self.history, self.config
        val_nll, improved = None, False
        if self.x_val is not None:
            val_nll = mean_nll(self.flow, self.x_val)
            if val_nll < h.best_val_nll:  # False for NaN: a NaN is never the best
                h.best_val_nll, h.best_step, self.bad_evals = val_nll, self.step, 0
                self.best_state = copy.deepcopy(self.flow.state_dict())
                improved = True
            else:
                self.bad_evals += 1
                if config.patience is not None and self.bad_evals >= config.patience:
                    h.stopped_early = True
        h.step.append(self.step)
        h.train_nll.append(train_nll)
        h.val_nll.append(math.nan if val_nll is None else val_nll)
        h.lr.append(self.optimizer.param_groups[0]["lr"])
        shown = {"loss": f"{train_nll:.4f}"}
        if val_nll is not None:
            shown["val_nll"] = f"{val_nll:.4f}"
        if self.dims is not None:
            shown = {"bpd": f"{self._bpd(train_nll):.4f}"}
            if val_nll is not None:
                shown["val_bpd"] = f"{self._bpd(val_nll):.4f}"
        if bar is not None:
            bar.set_postfix(shown, refresh=False)
        elif self.progress:  # not a terminal: one plain line per evaluation
            print(
                f"step {self.step}/{config.steps}",
                *(f"{k} {v}" for k, v in shown.items()),
                file=sys.stderr,
            )
        if self.run is not None:
            self._checkpoint()  # first: a run folder with a model always holds a training state
            self._tensorboard(train_nll, val_nll)
        # The model files: the best weights when they improve; the last ones while no
        # validation NLL is finite (or without validation), so every checkpoint has a model.
        if self.save_model is not None and (improved or self.best_state is None):
            self.save_model(self.flow)
        if self.callback is not None:
            self.callback(self.step, train_nll, val_nll)

    def _bpd(self, nll: float) -> float:
        from realnvp.images import bits_per_dim

        return bits_per_dim(-nll, self.dims)

    def _checkpoint(self) -> None:
        from realnvp.training.checkpoint import save_training_state

        save_training_state(self.run, self.flow, self.optimizer, self.state(), self.best_state)
        h = self.history
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        columns = [h.step, h.train_nll, h.val_nll, h.lr]
        header = ["step", "train_nll", "val_nll", "lr"]
        if self.dims is not None:
            columns += [[self._bpd(v) for v in h.train_nll], [self._bpd(v) for v in h.val_nll]]
            header += ["train_bpd", "val_bpd"]
        writer.writerow(header)
        writer.writerows(zip(*columns, strict=True))
        atomic_write(self.run / "metrics.csv", lambda tmp: tmp.write_text(buffer.getvalue()))

    def _tensorboard(self, train_nll: float, val_nll: float | None) -> None:
        """Log to ``run/tensorboard`` when the tensorboard package is installed."""
        if not hasattr(self, "_writer"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._writer = None
            else:
                self._writer = SummaryWriter(str(self.run / "tensorboard"))
        if self._writer is not None:
            self._writer.add_scalar("nll/train", train_nll, self.step)
            if val_nll is not None:
                self._writer.add_scalar("nll/val", val_nll, self.step)
            if self.dims is not None:
                self._writer.add_scalar("bpd/train", self._bpd(train_nll), self.step)
                if val_nll is not None:
                    self._writer.add_scalar("bpd/val", self._bpd(val_nll), self.step)
            self._writer.flush()

    def _progress_bar(self):
        if not self.progress or not sys.stderr.isatty():
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.config.steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5,
        )


def fit(
    flow: Flow,
    x_train: Tensor,
    x_val: Tensor | None = None,
    config: TrainConfig | None = None,
    callback: Callback | None = None,
) -> History:
    """Train ``flow`` by maximum likelihood on ``x_train``, in memory; returns its ``History``.

    With ``x_val``, the validation NLL is measured every ``eval_every`` steps and the flow ends
    with the weights of its best validation NLL. A non-finite loss raises ``FloatingPointError``
    naming the step, with the flow's weights left at their last finite values.

    Example:
        >>> from realnvp import RealNVP
        >>> flow = RealNVP(2, num_layers=2, hidden_features=16)
        >>> history = fit(flow, torch.randn(256, 2), config=TrainConfig(steps=20, eval_every=10))
        >>> history.step
        [10, 20]
    """
    return Trainer(flow, x_train, x_val, config, callback=callback).fit()
