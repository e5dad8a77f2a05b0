"""The training loop: Adam on the exact negative log-likelihood, read top to bottom.

``fit(flow, x_train, x_val, config)`` trains in memory. ``Trainer`` is the loop itself, with
evaluation, early stopping and resume; what it writes (metrics, TensorBoard, a progress bar,
checkpoints) are ``Callback``s, see ``realnvp.training.callbacks``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from realnvp.config import TrainConfig
from realnvp.models import Flow
from realnvp.training import distributed


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
def evaluate_nll(
    flow: Flow, x: Tensor, batch_size: int | None = None, context: Tensor | None = None
) -> Tensor:
    """Per-example negative log-likelihood of ``x`` (given its ``context`` (N, ...), for a
    conditional flow) in evaluation mode, in batches of ``batch_size`` rows (default
    ``eval_batch_size(x)``): (N, ...) -> (N,)."""
    batches = x.split(batch_size or eval_batch_size(x))
    contexts = [None] * len(batches) if context is None else context.split(len(batches[0]))
    with flow.evaluating():
        nll = [
            -(flow.log_prob(b) if c is None else flow.log_prob(b, c))
            for b, c in zip(batches, contexts, strict=True)
        ]
        return torch.cat(nll)


def mean_nll(flow: Flow, x: Tensor, context: Tensor | None = None) -> float:
    """The mean NLL of ``x`` (given ``context``); under DistributedDataParallel each rank scores
    ``x[rank::N]`` and the sums are all-reduced, so every rank gets the NLL of all of ``x``."""
    n, r = distributed.world_size(), distributed.rank()
    if n == 1:
        return evaluate_nll(flow, x, context=context).mean().item()
    mine = None if context is None else context[r::n]
    nll = evaluate_nll(flow, x[r::n], context=mine).double()
    total = distributed.all_reduce_sum(torch.stack([nll.sum(), nll.new_tensor(len(nll))]))
    return (total[0] / total[1]).item()


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """Let the CPU treat denormal floats (below ~1.2e-38 in float32) as zero, then put the
    caller's setting back.

    Training can leave some weights there: with Adam's L2 weight decay the outgoing weights of
    a hidden unit that no longer fires get only the decay's gradient and shrink into the
    denormal range, and every product with a denormal operand costs the CPU a slow microcode
    path. The conditional two_moons default (sbi_npe.py) went from 62 to 510 ms per step within
    3,000 steps, 5,048 of one layer's 65,536 weights denormal; flushed, it stayed at 62-74 ms
    with the same losses to 3 decimals at step 2,000. Only values below the normal range round
    otherwise, but over a long run that drifts the trajectory as any change of rounding does;
    a resumed run is flushed as its first part was, so resuming stays exact."""
    before = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def flushing_denormals() -> bool:
    """Whether the CPU flushes denormal floats to zero now (torch has no getter for
    ``torch.set_flush_denormal``: a denormal times one reads zero when it does)."""
    return (torch.tensor([1e-40]) * 1.0).item() == 0.0


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


@runtime_checkable
class Examples(Protocol):
    """Training examples as the trainer takes them: how many, which examples each step's batch
    holds (positions, or rows of a table: what ``gather`` takes), and the batch's tensors.
    ``TensorExamples`` holds them in memory; ``realnvp.training.rows.StoredExamples`` reads
    them from a table where it lies."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[Tensor]: ...

    def gather(self, index: Tensor) -> tuple[Tensor, Tensor | None]: ...


@runtime_checkable
class Validation(Protocol):
    """Validation data: what its mean NLL is under a flow (all of it, under torchrun too)."""

    def mean_nll(self, flow: Flow) -> float: ...


class TensorExamples:
    """Examples in memory: a tensor (N, ...), or a pair with their contexts (N, ...)."""

    def __init__(self, data: Tensor | tuple[Tensor, Tensor], device: torch.device):
        self.x, self.context = _pair(data, device)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[Tensor]:
        return batch_indices(len(self.x), batch_size, seed, start_step)

    def gather(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        index = index.to(self.x.device)
        return self.x[index], None if self.context is None else self.context[index]


class TensorValidation:
    """Validation examples in memory, prepared (``flow.prepare``), and their contexts."""

    def __init__(self, data: Tensor | tuple[Tensor, Tensor | None], device: torch.device):
        self.x, self.context = _pair(data, device)

    def mean_nll(self, flow: Flow) -> float:
        return mean_nll(flow, self.x, self.context)


@dataclass
class Evaluation:
    """One evaluation: the mean training NLL since the last one, the validation NLL (None
    without a validation set) and whether it is the best so far."""

    step: int
    train_nll: float
    val_nll: float | None
    improved: bool


class Callback:
    """What a trainer's outputs hook into: metrics files, TensorBoard, a progress bar,
    checkpoints (see ``realnvp.training.callbacks``). Override the hooks you need; under
    torchrun they are called on rank 0 only."""

    def on_start(self, trainer: Trainer) -> None:
        """Before the first step of ``fit`` (of a resumed run too)."""

    def on_step(self, trainer: Trainer) -> None:
        """After each optimizer step."""

    def on_evaluation(self, trainer: Trainer, evaluation: Evaluation) -> None:
        """After each evaluation, every ``eval_every`` steps and at the last step."""

    def on_end(self, trainer: Trainer) -> None:
        """At the end of ``fit``, with the flow holding its best weights."""

    def on_close(self, trainer: Trainer) -> None:
        """When ``fit`` returns or raises (a NaN loss, Ctrl-C): release files, bars."""


class Trainer:
    """Maximum-likelihood training of a flow, with evaluation, early stopping and callbacks.

    Each training batch goes through ``flow.training_batch`` (an image model dequantizes it with
    fresh noise); ``x_val`` is scored as given, so prepare it with ``flow.prepare``.

    Args:
        flow: the model; trained in place, and left with the weights of its best validation NLL
            (with ``config.ema``, the moving average's; without ``x_val``, the last average).
        x_train: the training data, a tensor (N, ...) as ``flow.as_input`` gives it. A
            conditional flow trains on pairs ``(x, context)`` of tensors with the same N, the
            contexts as ``flow.as_context`` gives them.
        x_val: the validation data, the same way, or None. Either may also be read from a
            table where it lies, batch by batch (``Examples``, ``Validation``: see
            ``realnvp.training.rows``).
        config: the recipe; default ``flow.recipe_for(x_train.shape)``, the model kind's own for
            data of that size.
        callbacks: the outputs (``realnvp.training.callbacks``): called on rank 0 only.
    """

    def __init__(
        self,
        flow: Flow,
        x_train: Tensor | tuple[Tensor, Tensor] | Examples,
        x_val: Tensor | tuple[Tensor, Tensor | None] | Validation | None = None,
        config: TrainConfig | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        self.flow = flow
        self.examples = (
            x_train if isinstance(x_train, Examples) else TensorExamples(x_train, flow.device)
        )
        self.config = config or flow.recipe_for(tuple(self.examples.shape))
        self.validation = (
            x_val
            if x_val is None or isinstance(x_val, Validation)
            else TensorValidation(x_val, flow.device)
        )
        self.optimizer = make_optimizer(flow.parameters(), self.config.lr, self.config.weight_decay)
        if self.config.compile:
            flow.compile()
        self.rank, self.world = distributed.rank(), distributed.world_size()
        # Under torchrun DistributedDataParallel averages the gradients; rank 0 writes outputs.
        self.model = distributed.data_parallel(flow, self.config.batch_size)
        self.callbacks = list(callbacks) if self.rank == 0 else []
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, self.config.steps)
            if self.config.schedule == "cosine"
            else None
        )
        self.history = History()
        self.step = 0
        self.bad_evals = 0
        self.best_state: dict[str, Tensor] | None = None
        # the moving average of the parameters (config.ema), by parameter name
        self.average: dict[str, Tensor] | None = (
            None
            if not self.config.ema
            else {k: p.detach().clone() for k, p in flow.named_parameters()}
        )

    # -- resuming -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The JSON part of the training state (tensors travel separately)."""
        return {
            "step": self.step,
            "bad_evals": self.bad_evals,
            "history": self.history.to_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "config": self.config.to_dict(),
        }

    def load_state(
        self,
        state: dict[str, Any],
        optimizer_state: dict,
        best: dict[str, Tensor] | None,
        average: dict[str, Tensor] | None = None,
    ) -> None:
        """Continue from a saved state; the flow must already hold the saved weights, and
        ``average`` the saved moving average when ``config.ema`` is set."""
        if (average is None) != (self.average is None):
            raise ValueError(
                "the saved state has no moving average of the weights"
                if average is None
                else "the saved state has a moving average but the recipe has no ema"
            )
        if average is not None and self.average is not None:
            if set(average) != set(self.average):
                raise ValueError("the saved moving average is of other parameters")
            self.average = {k: average[k].to(v) for k, v in self.average.items()}
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
        try:
            with flushed_denormals():
                history = self._fit()
        except BaseException:
            self._close()  # an error in closing must not hide the one on its way out
            raise
        error = self._close()
        if error is not None:
            raise error
        return history

    def _close(self) -> Exception | None:
        """Call every callback's ``on_close``, each whatever the others do; returns the first
        error raised, if any."""
        first = None
        for callback in self.callbacks:
            try:
                callback.on_close(self)
            except Exception as error:  # each callback closes whatever the others do
                first = first or error
        return first

    def _fit(self) -> History:
        config, flow = self.config, self.flow
        batches = self.examples.batches(config.batch_size, config.seed, self.step)
        window, window_steps = 0.0, 0
        self._call("on_start")
        flow.train()
        start = time.perf_counter() - self.history.seconds
        while self.step < config.steps and not self.history.stopped_early:
            x, context = self.examples.gather(next(batches)[self.rank :: self.world])  # this rank's
            window += self._step(x, context)
            window_steps += 1
            self._call("on_step")
            if self.step % config.eval_every == 0 or self.step == config.steps:
                self.history.seconds = time.perf_counter() - start
                if self.world > 1:  # the global batch's mean loss
                    total = torch.tensor(window, dtype=torch.float64, device=flow.device)
                    window = distributed.all_reduce_sum(total).item() / self.world
                self._evaluate(window / window_steps)
                window, window_steps = 0.0, 0
        self.history.seconds = time.perf_counter() - start
        if self.best_state is not None:
            flow.load_state_dict(self.best_state)
        elif self.average is not None:
            self._put(self.average)  # no validation: the average is the trained model
        self._call("on_end")
        return self.history

    def _step(self, x: Tensor, context: Tensor | None = None) -> float:
        """One optimizer step on the batch ``x`` (given its ``context``); returns its mean
        NLL."""
        config, flow = self.config, self.flow
        x = flow.training_batch(x, self.step, config.seed)
        with torch.autocast(flow.device.type, torch.bfloat16, enabled=config.bf16):
            loss = -self.model(x, context).float().mean()
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
        if self.average is not None:
            self._update_average()
        self.step += 1
        return loss.item()

    # -- the moving average of the weights (config.ema) -------------------------------------
    def _update_average(self) -> None:
        """``average <- d average + (1 - d) weights`` with ``d = min(ema, (1 + t) / (10 + t))``
        at step t (counted before this one), a function of the step alone so resume is exact."""
        assert self.average is not None
        decay = min(self.config.ema, (1 + self.step) / (10 + self.step))
        params = dict(self.flow.named_parameters())
        with torch.no_grad():
            torch._foreach_lerp_(
                list(self.average.values()), [params[k] for k in self.average], 1 - decay
            )

    def _put(self, weights: dict[str, Tensor]) -> None:
        params = dict(self.flow.named_parameters())
        with torch.no_grad():
            for k, value in weights.items():
                params[k].copy_(value)

    @contextmanager
    def evaluated_weights(self) -> Iterator[None]:
        """Within the block the flow holds the weights that evaluation scores and checkpoints
        keep: the moving average when ``config.ema`` is set (the trained weights are put back
        after it), else the trained weights as they are."""
        if self.average is None:
            yield
            return
        live = {k: p.detach().clone() for k, p in self.flow.named_parameters()}
        self._put(self.average)
        try:
            yield
        finally:
            self._put(live)

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

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

    def _evaluate(self, train_nll: float) -> None:
        h, config = self.history, self.config
        val_nll, improved = None, False
        if self.validation is not None:
            with self.evaluated_weights():
                val_nll = self.validation.mean_nll(self.flow)
                improved = val_nll < h.best_val_nll  # False for NaN: a NaN is never the best
                if improved:
                    self.best_state = copy.deepcopy(self.flow.state_dict())
            if improved:
                h.best_val_nll, h.best_step, self.bad_evals = val_nll, self.step, 0
            else:
                self.bad_evals += 1
                if config.patience is not None and self.bad_evals >= config.patience:
                    h.stopped_early = True
        h.step.append(self.step)
        h.train_nll.append(train_nll)
        h.val_nll.append(math.nan if val_nll is None else val_nll)
        h.lr.append(self.optimizer.param_groups[0]["lr"])
        self._call("on_evaluation", Evaluation(self.step, train_nll, val_nll, improved))


def _pair(
    data: Tensor | tuple[Tensor, Tensor] | tuple[Tensor, Tensor | None], device: torch.device
) -> tuple[Tensor, Tensor | None]:
    """``(x, context)`` on ``device`` from a tensor or a pair; the context None for a tensor."""
    x, context = data if isinstance(data, tuple | list) else (data, None)
    if context is not None and len(context) != len(x):
        raise ValueError(f"{len(x)} examples but {len(context)} contexts; give one per example")
    return x.to(device), None if context is None else context.to(device)


def fit(
    flow: Flow,
    x_train: Tensor | tuple[Tensor, Tensor],
    x_val: Tensor | tuple[Tensor, Tensor] | None = None,
    config: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
) -> History:
    """Train ``flow`` by maximum likelihood on ``x_train``, in memory; returns its ``History``.

    A conditional flow trains on pairs: ``fit(flow, (x, context), (x_val, context_val))``.
    With ``x_val``, the validation NLL is measured every ``eval_every`` steps and the flow ends
    with the weights of its best validation NLL (with ``config.ema``, of the moving average's;
    without ``x_val``, the last average). ``config`` defaults to the flow's own
    ``recipe``. A non-finite loss raises ``FloatingPointError`` naming the step, with the flow's
    weights left at their last finite values.

    Examples:
        >>> from realnvp import RealNVP
        >>> flow = RealNVP(2, num_layers=2, hidden_features=16)
        >>> history = fit(flow, torch.randn(256, 2), config=TrainConfig(steps=20, eval_every=10))
        >>> history.step
        [10, 20]
    """
    return Trainer(flow, x_train, x_val, config, callbacks).fit()
