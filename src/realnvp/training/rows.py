"""Training on a table where it lies (``realnvp.data.store``): the split into training and
validation rows by index, the standardization statistics in streaming passes, batches gathered
row by row, and validation in bounded chunks. Nothing holds the table.

Up to ``LARGE`` rows, the split and the batch order are those of an array in memory (NumPy's
permutation of the rows, torch's of the training rows at each epoch), the statistics are the
training rows', and the validation rows are scored from memory. Past ``LARGE`` rows, where an
index of every row costs more memory than the data model itself, the split and each epoch's order
are computed permutations (``realnvp.data.order``), the statistics are taken over all rows (the
validation rows' share of two moments over millions of rows is nil) and validation streams in
chunks. Which applies depends on the number of rows alone, so a table gives the same run, bit for
bit, from memory or from disk.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from realnvp.data.order import Permutation
from realnvp.data.store import ArrayRows, Rows
from realnvp.models import Flow
from realnvp.training import distributed
from realnvp.training.loop import batch_indices, evaluate_nll

#: rows past which the split, the batch order and validation are computed rather than stored
LARGE = 2**21
#: training rows that sample the table for the checks and the rounding detection
SAMPLE = 200_000
#: what a run's records say (``data.split``) when its split and batch order are computed
COMPUTED = "computed"
#: batches whose rows are computed at once past ``LARGE`` rows
BLOCK_STEPS = 256


@dataclass
class Table:
    """A table to train on, where it lies: ``rows``, of which the columns ``context``
    (positions) are a conditional model's context and the others are modelled.

    Examples:
        >>> table = Table.of(np.arange(12.0).reshape(4, 3), context=np.ones((4, 1)))
        >>> table.shape, table.context, table.modelled
        ((4, 4), (3,), [0, 1, 2])
    """

    rows: Rows
    context: tuple[int, ...] = ()

    @classmethod
    def of(cls, x: NDArray, context: NDArray | None = None) -> Table:
        """A table in memory: the rows ``x`` (N, D) and their contexts (N, C), if any."""
        if context is None:
            return cls(ArrayRows(x))
        width = np.shape(x)[1]
        both = np.concatenate([np.asarray(x, np.float64), np.asarray(context, np.float64)], 1)
        return cls(ArrayRows(both), tuple(range(width, both.shape[1])))

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.n, self.rows.width

    @property
    def modelled(self) -> list[int]:
        return [j for j in range(self.rows.width) if j not in self.context]

    def split(self, table: NDArray) -> tuple[NDArray, NDArray | None]:
        """Rows of the table -> the modelled columns and the contexts (None: unconditional)."""
        if not self.context:
            return table, None
        return table[:, self.modelled], table[:, list(self.context)]

    def fingerprint(self) -> str:
        """``realnvp.training.runs.fingerprint`` of the modelled columns and the contexts,
        hashed chunk by chunk (the same digest as of the whole arrays)."""
        digest = hashlib.sha256()
        parts = [self.modelled] + ([list(self.context)] if self.context else [])
        for i, columns in enumerate(parts):
            if i:
                digest.update(b"context")
            for _, chunk in self.rows.chunks():
                digest.update(np.ascontiguousarray(chunk[:, columns]).tobytes())
        return digest.hexdigest()[:16]


class RowSplit:
    """Which rows of ``n`` are for training and which for validation, by index: the rows that
    ``realnvp.training.runs.split`` would put in each, up to ``LARGE`` rows; past it, positions
    ``0 .. n_val-1`` of a computed permutation are the validation rows and the rest the
    training rows."""

    def __init__(self, n: int, n_val: int, seed: int, computed: bool | None = None):
        """``computed``: whether the split and the batch order are computed (None: past
        ``LARGE`` rows). A run records it (``COMPUTED``), so a resumed run keeps its own."""
        self.n, self.n_val = n, n_val
        self.large = n > LARGE if computed is None else computed
        if self.large:
            self.perm = Permutation(n, seed)
        else:
            perm = np.random.default_rng(seed).permutation(n)  # as runs.split draws it
            self.train_rows, self.val_rows = perm[n_val:], perm[:n_val]

    @property
    def n_train(self) -> int:
        return self.n - self.n_val

    def train(self, k: NDArray) -> NDArray:
        """The rows of training examples ``k`` (positions ``0 .. n_train-1``)."""
        return self.perm(k + self.n_val) if self.large else self.train_rows[k]

    def val(self, k: NDArray) -> NDArray:
        """The rows of validation examples ``k`` (positions ``0 .. n_val-1``)."""
        return self.perm(k) if self.large else self.val_rows[k]

    def batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[Tensor]:
        """The rows of the training batches of steps ``start_step, ...``: ``loop.batch_indices``'s
        order of the training positions up to ``LARGE`` rows, past it a computed permutation
        drawn from ``(seed, epoch)``, its rows computed ``BLOCK_STEPS`` batches at a time (one
        vectorized call instead of one per step)."""
        if not self.large:
            for positions in batch_indices(self.n_train, batch_size, seed, start_step):
                yield torch.from_numpy(self.train_rows[positions.numpy()])
            return
        batch_size = min(batch_size, self.n_train)
        per_epoch = self.n_train // batch_size
        epoch, k = divmod(start_step, per_epoch)
        while True:
            # epoch e's key is not the split's (seed): the two permutations are independent
            perm = Permutation(self.n_train, seed + 1_000_003 * (epoch + 1))
            for first in range(k, per_epoch, BLOCK_STEPS):
                last = min(first + BLOCK_STEPS, per_epoch)
                rows = self.train(perm(np.arange(first * batch_size, last * batch_size)))
                yield from torch.from_numpy(rows).split(batch_size)
            epoch, k = epoch + 1, 0


def moments(table: Table, split: RowSplit) -> list[NDArray]:
    """The mean and std (float64) of the modelled columns and, for a conditional table, of the
    contexts: of the training rows up to ``LARGE`` rows, of all rows past it; two streaming
    passes in file order. A constant column gets std 1."""
    mask = None
    if not split.large:
        mask = np.ones(split.n, dtype=bool)
        mask[split.val_rows] = False

    def kept() -> Iterator[NDArray]:
        for start, chunk in table.rows.chunks():
            yield chunk if mask is None else chunk[mask[start : start + len(chunk)]]

    total, count = np.zeros(table.rows.width), 0
    for rows in kept():
        total, count = total + rows.sum(0), count + len(rows)
    mean = total / count
    squares = np.zeros(table.rows.width)
    with np.errstate(over="ignore", invalid="ignore"):  # Standardize refuses an overflow
        for rows in kept():
            squares = squares + ((rows - mean) ** 2).sum(0)
    std = np.sqrt(squares / count)
    std = np.where(std > 0, std, 1.0)
    out = [mean[table.modelled], std[table.modelled]]
    if table.context:
        out += [mean[list(table.context)], std[list(table.context)]]
    return out


def sample(table: Table, split: RowSplit, rows: int = SAMPLE) -> NDArray:
    """The training rows (all of them up to ``rows``, else ``rows`` of them evenly spread over
    the training positions), for the checks and the rounding detection."""
    if split.n_train > rows:
        k = np.linspace(0, split.n_train - 1, rows).astype(np.int64)
    else:
        k = np.arange(split.n_train)
    return table.rows.take(split.train(k))


class StoredExamples:
    """A table's training rows as the trainer takes them: ``gather`` reads the rows of a batch
    (under torchrun, of this process's share of it) and nothing else."""

    def __init__(self, table: Table, split: RowSplit, flow: Flow):
        self.table, self.split, self.flow = table, split, flow

    def __len__(self) -> int:
        return self.split.n_train

    @property
    def shape(self) -> tuple[int, int]:
        return self.split.n_train, len(self.table.modelled)

    def batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[Tensor]:
        """The rows of each step's batch (``RowSplit.batches``)."""
        return self.split.batches(batch_size, seed, start_step)

    def gather(self, rows: Tensor) -> tuple[Tensor, Tensor | None]:
        """The batch of the table's rows ``rows``, as the model takes it."""
        x, context = self.table.split(self.table.rows.take(rows.cpu().numpy()))
        return self.flow.as_input(x), None if context is None else self.flow.as_context(context)


class StoredValidation:
    """A table's validation rows, scored in chunks of ``chunk`` rows (each dequantized, for a
    model with rounded columns, with noise drawn from ``(seed, chunk)``); under torchrun each
    process scores every N-th chunk and the sums are all-reduced."""

    def __init__(self, table: Table, split: RowSplit, seed: int, chunk: int = 65536):
        self.table, self.split, self.seed, self.chunk = table, split, seed, chunk

    def __len__(self) -> int:
        return self.split.n_val

    def mean_nll(self, flow: Flow) -> float:
        n, r = distributed.world_size(), distributed.rank()
        total = torch.zeros(2, dtype=torch.float64)
        starts = range(0, self.split.n_val, self.chunk)
        for i, start in list(enumerate(starts))[r::n]:
            k = np.arange(start, min(start + self.chunk, self.split.n_val))
            x, context = self.table.split(self.table.rows.take(self.split.val(k)))
            c = None if context is None else flow.as_context(context)
            nll = evaluate_nll(flow, flow.prepare(x, self.seed + i), context=c).double().cpu()
            total += torch.stack([nll.sum(), torch.tensor(float(len(nll)))])
        if n > 1:
            total = distributed.all_reduce_sum(total.to(flow.device)).cpu()
        return (total[0] / total[1]).item() if total[1] > 0 else math.nan


def stored_data(
    table: Table, split: RowSplit, flow: Flow, val_seed: int
) -> tuple[StoredExamples, StoredValidation | tuple[Tensor, Tensor | None] | None]:
    """The trainer's training examples and validation data for ``table``: the validation rows
    prepared in memory up to ``LARGE`` rows (as ``make_trainer`` prepares an array's), else
    scored in chunks; None without validation rows."""
    examples = StoredExamples(table, split, flow)
    if not split.n_val:
        return examples, None
    if split.large:
        return examples, StoredValidation(table, split, val_seed)
    x, context = table.split(table.rows.take(split.val_rows))
    c = None if context is None else flow.as_context(context)
    return examples, (flow.prepare(x, val_seed), c)
