"""Fitting a flow to data, the one path every entry point takes: split the rows, build the model
for the training rows (``Flow.for_data``), prepare the tensors (``Flow.as_input``,
``Flow.prepare``) and train. ``fit_data`` does it in memory (the estimator, the studies);
``train_run`` does it in a run folder, with checkpoints and resume (the CLI)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from realnvp.config import TrainConfig, default_val_fraction
from realnvp.data.store import ParquetRows, TableSummary
from realnvp.errors import ConfigError
from realnvp.files import atomic_write
from realnvp.models import Flow, kind_of
from realnvp.training.callbacks import Callback, run_outputs
from realnvp.training.checkpoint import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    TRAINING_STATE,
    CheckpointError,
    load_model,
    load_training_state,
    read_model_config,
)
from realnvp.training.loop import History, Trainer
from realnvp.training.rows import COMPUTED, RowSplit, Table, moments, sample, stored_data

#: the seed of the one dequantization of validation images
VAL_NOISE_SEED = 20170101


def split(x: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle rows with ``seed`` and hold out ``val_fraction`` of them (at least one row)."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"must be in [0, 1), got {val_fraction}", "val_fraction")
    perm = np.random.default_rng(seed).permutation(len(x))
    n_val = _held_out(len(x), val_fraction)
    return x[perm[n_val:]], x[perm[:n_val]]


def _held_out(n: int, val_fraction: float) -> int:
    """How many of ``n`` rows ``split`` holds out."""
    return min(max(round(val_fraction * n), 1), n - 1) if val_fraction > 0 else 0


def train_shape(shape: tuple[int, ...], val_fraction: float) -> tuple[int, ...]:
    """The shape of the training rows that ``split`` leaves of data of ``shape``."""
    return (shape[0] - _held_out(shape[0], val_fraction), *shape[1:])


def fingerprint(x: np.ndarray, context: np.ndarray | None = None) -> str:
    """A short hash of the data (and their contexts), so a resumed run can check it sees the
    same rows."""
    digest = hashlib.sha256(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    if context is not None:
        digest.update(b"context")
        digest.update(np.ascontiguousarray(context, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu`` or ``cuda``; refuses a missing GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("'cuda' was asked for, but no CUDA device is available", "device")
    return torch.device(name)


#: settings of TrainConfig that a resumed run may change: they change speed, not the result
RESUME_MAY_CHANGE = ("compile",)


def saved_settings(run: Path) -> dict[str, Any]:
    """What a run was started with, from ``run/last.safetensors`` alone: ``model`` (the model's
    ``spec``: its type and constructor arguments), ``train`` (TrainConfig's fields) and ``data``
    (source, fingerprint, validation fraction)."""
    flow, _, state, _, _ = _load_state(run)
    return _settings(run, flow, state)


def _load_state(run: Path):
    if not (Path(run) / TRAINING_STATE).exists():
        raise CheckpointError(f"{run}: holds no {TRAINING_STATE} to resume from")
    return load_training_state(run)


def _settings(run: Path, flow: Flow, state: dict[str, Any]) -> dict[str, Any]:
    # a recipe saved before a field existed ran with that field's default (ema: none)
    train = {**TrainConfig().to_dict(), **state["config"]}
    # a config leaves out options at their constructor defaults (masks, context_affine)
    model = {**type(flow).defaults(), **flow.spec}
    return {"model": model, "train": train, "data": _run_info(run, state)["data"]}


def _run_info(run: Path, state: dict[str, Any]) -> dict[str, Any]:
    """The run's settings from its training state (or, for runs saved before the state held
    them, from model.json)."""
    info = state.get("run")
    if not info and (Path(run) / MODEL_CONFIG).exists():
        info = read_model_config(run)
    data = info.get("data") if isinstance(info, dict) else None
    if not isinstance(data, dict) or not {"fingerprint", "val_fraction"} <= set(data):
        raise CheckpointError(f"{run}: the training state does not record its data split")
    fraction = data["val_fraction"]
    if not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise CheckpointError(f"{run}: damaged training state (val_fraction {fraction!r})")
    assert isinstance(info, dict)  # else data is None, refused above
    return {"data": data, "train": info.get("train", state["config"])}


def saved_config(run: Path, values: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a saved run, refused with CheckpointError if damaged."""
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{run}: damaged training state (its recipe: {error})") from None


def check_resume(run: Path, saved: dict[str, Any], given: dict[str, dict[str, Any]]) -> None:
    """Refuse settings that contradict those a run was started with. ``given`` holds only what
    the caller set explicitly: ``{"model": {...}, "train": {...}, "data": {...}}``."""
    for part, values in given.items():
        for name, value in values.items():
            if part == "train" and name in RESUME_MAY_CHANGE:
                continue
            old = saved[part].get(name)
            if value is not None and old != value:
                raise ResumeConflict(run, name, old, value)


class ResumeConflict(ConfigError):
    """A setting given to a resumed run differs from the one the run was started with."""

    def __init__(self, run: Path, name: str, saved: Any, given: Any):
        self.run, self.name, self.saved, self.given = run, name, saved, given
        super().__init__(
            f"{run}: was started with {name}={saved!r}, not {given!r}; a resumed run keeps its "
            "settings (leave it out, or start a new run)"
        )


def new_flow(
    model: dict[str, Any] | None,
    x_train: NDArray | TableSummary,
    device: str = "auto",
    context: NDArray | None = None,
) -> Flow:
    """The model ``model`` describes (its ``type``, RealNVP without one, and the constructor's
    other arguments), built for the training rows ``x_train`` (and their ``context``, for a
    conditional model) on ``device``."""
    options = {k: v for k, v in (model or {}).items() if k != "type"}
    if context is not None:
        options["context"] = context
    return kind_of(model).for_data(x_train, **options).to(resolve_device(device))


def make_trainer(
    flow: Flow,
    x_train: NDArray,
    x_val: NDArray,
    config: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    context_train: NDArray | None = None,
    context_val: NDArray | None = None,
) -> Trainer:
    """A trainer for ``flow`` on the rows ``x_train`` and ``x_val`` (numpy) and, for a
    conditional flow, their contexts: the training rows as the model takes them, the validation
    rows prepared once (an image model dequantizes them with a fixed seed, ``VAL_NOISE_SEED``);
    no validation set when ``x_val`` is empty."""
    x_val_t: Tensor | tuple[Tensor, Tensor] | None
    x_train_t: Tensor | tuple[Tensor, Tensor]
    x_val_t = flow.prepare(x_val, VAL_NOISE_SEED) if len(x_val) else None
    x_train_t = flow.as_input(x_train)
    if context_train is not None:
        x_train_t = (x_train_t, flow.as_context(context_train))
        if x_val_t is not None:
            if context_val is None:  # the TypeError as_context would raise, named
                raise TypeError("validation rows with context_train need context_val")
            x_val_t = (x_val_t, flow.as_context(context_val))
    return Trainer(flow, x_train_t, x_val_t, config, callbacks)


def fit_data(
    x_train: NDArray,
    x_val: NDArray,
    model: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    seed: int | None = None,
    device: str = "auto",
    callbacks: Sequence[Callback] = (),
    context_train: NDArray | None = None,
    context_val: NDArray | None = None,
) -> tuple[Flow, History]:
    """Build the model ``model`` describes for ``x_train`` and train it in memory; returns the
    flow, in evaluation mode with its best validation weights, and its history. With
    ``context_train`` and ``context_val``, the rows' contexts, the model is conditional,
    ``p(x | context)``.

    ``model`` holds the constructor's arguments and, for another kind than ``RealNVP``, its
    ``type`` (e.g. ``{"type": "multiscale", "levels": 17}``); sizes and statistics come from
    ``x_train``. ``config`` defaults to the kind's ``recipe_for(x_train.shape)``; ``seed`` seeds
    torch before the model is built (None: torch's global generator as it stands).

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(200, 2))
        >>> flow, history = fit_data(x[:180], x[180:], {"num_layers": 2, "hidden_features": 8},
        ...                          TrainConfig(steps=20, eval_every=10), seed=0)
        >>> history.step, flow.config["features"]
        ([10, 20], 2)
    """
    if seed is not None:
        torch.manual_seed(seed)
    flow = new_flow(model, x_train, device, context_train)
    trainer = make_trainer(flow, x_train, x_val, config, callbacks, context_train, context_val)
    history = trainer.fit()
    return flow.eval(), history


def train_run(
    run: Path,
    x: NDArray | Table,
    model: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    val_fraction: float | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = False,
    data_info: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
    context: NDArray | None = None,
) -> tuple[Flow, History]:
    """Fit a flow to the rows of ``x`` (given their ``context``) and keep all in the folder ``run``.

    ``model`` describes the model as for ``fit_data``: ``RealNVP``'s arguments for a table ``x``
    (N, D), standardized with the training rows' mean and std (float64); ``{"type":
    "multiscale", "levels": K, ...}`` for images (N, C, H, W) of integer grey levels.

    ``config`` defaults to the model kind's ``recipe_for`` the training rows' shape; torch is
    seeded with ``config.seed`` before the model is built. ``val_fraction`` of the rows (if
    None, ``default_val_fraction``: 10%, at most 100,000) are held out, drawn with the seed. The
    run writes checkpoints, ``metrics.csv``, TensorBoard scalars and ``history.json`` (see
    ``realnvp.training.callbacks.run_outputs``); ``callbacks`` are called after those.

    With ``resume``, training continues from ``run/last.safetensors`` with exactly the settings
    the run was started with, the split of ``x`` into training and validation rows included.
    Leave ``model``, ``config`` and ``val_fraction`` out (None) to keep the saved ones; any that
    are given must equal them, ``config.compile`` excepted (so pass the saved config,
    ``TrainConfig(**saved_settings(run)["train"])``, to change only ``compile``), else
    ``ResumeConflict`` names the first setting that differs. ``x`` may be a
    ``realnvp.training.rows.Table``, a table where it lies (a .npy file read in place).
    """
    run = Path(run)
    dev = resolve_device(device)
    if isinstance(x, Table):
        _check_table(x, context)
    if resume:
        saved = _saved_run(run, model, config, val_fraction)
        if isinstance(x, Table) or saved["info"]["data"].get("split") == COMPUTED:
            table = x if isinstance(x, Table) else Table.of(x, context)
            return _resume_table(run, table, saved, config, dev, progress, callbacks)
        return _resume(run, x, context, saved, config, dev, progress, callbacks)
    if (run / MODEL_CONFIG).exists() or (run / TRAINING_STATE).exists():
        raise FileExistsError(
            f"{run}: already holds a run; resume it, or train into another folder"
        )
    if isinstance(x, Table):
        return _new_table(run, x, model, config, val_fraction, dev, progress, data_info, callbacks)
    return _new_arrays(
        run, x, context, model, config, val_fraction, dev, progress, data_info, callbacks
    )


def _new_arrays(
    run, x, context, model, config, val_fraction, device, progress, data_info, callbacks
) -> tuple[Flow, History]:
    """A new run on the rows of arrays in memory (a table, or images)."""
    kind = kind_of(model)
    val_fraction = default_val_fraction(len(x)) if val_fraction is None else val_fraction
    config = config or kind.recipe_for(train_shape(x.shape, val_fraction))
    x_train, x_val = split(x, val_fraction, config.seed)
    c_train, c_val = (None, None) if context is None else split(context, val_fraction, config.seed)
    data = {"rows": len(x), "shape": list(x.shape[1:]), "fingerprint": fingerprint(x, context)}
    info = _new_info(data_info, data, val_fraction, config)
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    flow = new_flow(model, x_train, device, c_train)
    outputs = run_outputs(run, info, progress) + list(callbacks)
    return _fit(run, make_trainer(flow, x_train, x_val, config, outputs, c_train, c_val))


def _new_info(
    data_info: dict[str, Any] | None, data: dict[str, Any], val_fraction: float, config
) -> dict[str, Any]:
    """A new run's records: its data (``data_info``, then ``data``) and its recipe."""
    return {
        "data": {**(data_info or {}), **data, "val_fraction": val_fraction},
        "train": config.to_dict(),
    }


def _resume(run, x, context, saved, config, device, progress, callbacks) -> tuple[Flow, History]:
    """Resume the run ``saved`` (``_saved_run``) on the rows of arrays in memory."""
    info = saved["info"]
    _check_data(run, info, fingerprint(x, context))
    config = _resumed_config(run, saved["state"], config)
    fraction = info["data"]["val_fraction"]
    x_train, x_val = split(x, fraction, config.seed)
    c_train, c_val = (None, None) if context is None else split(context, fraction, config.seed)
    outputs = run_outputs(run, info, progress) + list(callbacks)
    flow = saved["flow"].to(device)
    trainer = make_trainer(flow, x_train, x_val, config, outputs, c_train, c_val)
    _restore(run, trainer, saved, device)
    return _fit(run, trainer)


def _saved_run(run: Path, model, config, val_fraction) -> dict[str, Any]:
    """A run's saved state (``flow``, ``optimizer``, ``state``, ``best``, ``average``) and
    records (``info``), the settings given now checked against those it was started with."""
    flow, optimizer_state, state, best, average = _load_state(run)
    given = {
        "model": model or {},
        "train": {} if config is None else config.to_dict(),
        "data": {"val_fraction": val_fraction} if val_fraction is not None else {},
    }
    check_resume(run, _settings(run, flow, state), given)
    return {
        "flow": flow,
        "optimizer": optimizer_state,
        "state": state,
        "best": best,
        "average": average,
        "info": _run_info(run, state),
    }


def _check_data(run: Path, info: dict[str, Any], fingerprint_now: str) -> None:
    if info["data"]["fingerprint"] != fingerprint_now:
        raise CheckpointError(
            f"{run}: was trained on other data than given now; resume with the same data"
        )


def _resumed_config(run: Path, state: dict[str, Any], config: TrainConfig | None) -> TrainConfig:
    """The saved recipe, with what a resumed run may change (``RESUME_MAY_CHANGE``) from
    ``config``."""
    train = {**state["config"]}
    if config is not None:
        train.update({k: getattr(config, k) for k in RESUME_MAY_CHANGE})
    return saved_config(run, train)


def _restore(run: Path, trainer: Trainer, saved: dict[str, Any], device) -> None:
    """Put a saved training state (``_saved_run``) into ``trainer`` (the best weights of a run
    saved before the state held them read from its model file)."""
    state, best = saved["state"], saved["best"]
    history = state["history"] if isinstance(state["history"], dict) else {}
    if best is None and history.get("best_step") and (run / MODEL_WEIGHTS).exists():
        best = load_model(run)[0].state_dict()  # saved before the state held its best weights
    try:
        trainer.load_state(
            state,
            saved["optimizer"],
            None if best is None else {k: v.to(device) for k, v in best.items()},
            saved["average"],
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{run}: damaged training state ({error})") from None


def _fit(run: Path, trainer: Trainer) -> tuple[Flow, History]:
    history = trainer.fit()
    if trainer.rank == 0:
        text = json.dumps(history.to_dict(), indent=1) + "\n"
        atomic_write(run / "history.json", lambda tmp: tmp.write_text(text))
    return trainer.flow.eval(), history


def _check_table(table: Table, context: NDArray | None) -> None:
    if context is not None:
        raise TypeError("a Table holds its contexts: name their columns in Table.context")
    if isinstance(table.rows, ParquetRows):
        raise ValueError(
            f"{table.rows.source}: a Parquet file gives random rows only by decoding whole row "
            "groups; convert it to a .npy file (realnvp convert) and train on NpyRows"
        )


def _new_table(
    run, table, model, config, val_fraction, device, progress, data_info, callbacks
) -> tuple[Flow, History]:
    """A new run on a ``Table``, its rows read where they lie."""
    n = table.rows.n
    val_fraction = default_val_fraction(n) if val_fraction is None else val_fraction
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"must be in [0, 1), got {val_fraction}", "val_fraction")
    shape = (n - _held_out(n, val_fraction), len(table.modelled))
    config = config or kind_of(model).recipe_for(shape)
    split = RowSplit(n, _held_out(n, val_fraction), config.seed)
    data = {"rows": n, "shape": [shape[1]], "fingerprint": table.fingerprint()}
    data |= {"split": COMPUTED} if split.large else {}
    info = _new_info(data_info, data, val_fraction, config)
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    flow = new_flow(model, summarize(table, split), device)
    return _fit(run, _table_trainer(run, table, split, flow, config, info, progress, callbacks))


def _resume_table(run, table, saved, config, device, progress, callbacks) -> tuple[Flow, History]:
    """Resume the run ``saved`` (``_saved_run``) on a ``Table``, with the split it recorded
    (numpy's and torch's for a run that records none)."""
    info = saved["info"]
    _check_data(run, info, table.fingerprint())
    config = _resumed_config(run, saved["state"], config)
    n_val = _held_out(table.rows.n, info["data"]["val_fraction"])
    computed = info["data"].get("split") == COMPUTED
    split = RowSplit(table.rows.n, n_val, config.seed, computed)
    flow = saved["flow"].to(device)
    trainer = _table_trainer(run, table, split, flow, config, info, progress, callbacks)
    _restore(run, trainer, saved, device)
    return _fit(run, trainer)


def summarize(table: Table, split: RowSplit) -> TableSummary:
    """What a model for ``table``'s training rows is built from (see ``RealNVP.for_data``)."""
    x, context = table.split(sample(table, split))
    return TableSummary(split.n_train, x, moments(table, split), context)


def _table_trainer(run, table, split, flow, config, info, progress, callbacks) -> Trainer:
    examples, validation = stored_data(table, split, flow, VAL_NOISE_SEED)
    outputs = run_outputs(run, info, progress) + list(callbacks)
    return Trainer(flow, examples, validation, config, outputs)
