"""A training run in a folder: split the data, train, checkpoint, resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realnvp.errors import ConfigError
from realnvp.flows import Flow, RealNVP
from realnvp.training.checkpoint import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    TRAINING_STATE,
    CheckpointError,
    atomic_write,
    load_model,
    load_training_state,
    read_model_config,
    save_model,
)
from realnvp.training.loop import History, TrainConfig, Trainer

#: the seed of the one dequantization of validation images
VAL_NOISE_SEED = 20170101


def split(x: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle rows with ``seed`` and hold out ``val_fraction`` of them (at least one row)."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(len(x))
    n_val = round(val_fraction * len(x))
    if val_fraction > 0:
        n_val = min(max(n_val, 1), len(x) - 1)
    return x[perm[n_val:]], x[perm[:n_val]]


def standardized_flow(x_train: np.ndarray, **model: Any) -> RealNVP:
    """A RealNVP that standardizes with the mean and std of ``x_train`` (a constant column
    gets std 1), so it trains on standardized values and reports densities in data units.

    The statistics are computed in float64 and kept so (see ``Standardize``): feed the flow
    float64 data and columns with large offsets keep their digits."""
    x_train = np.asarray(x_train, dtype=np.float64)
    flow = RealNVP(**{**model, "features": x_train.shape[1], "standardize": True})
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
        std = x_train.std(0)
    flow.set_standardization(
        torch.as_tensor(x_train.mean(0)), torch.as_tensor(np.where(std > 0, std, 1.0))
    )
    return flow


def fingerprint(x: np.ndarray) -> str:
    """A short hash of the data, so a resumed run can check it sees the same rows."""
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float64).tobytes()).hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu`` or ``cuda``; refuses a missing GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for, but no CUDA device is available")
    return torch.device(name)


#: settings of TrainConfig that a resumed run may change: they change speed, not the result
RESUME_MAY_CHANGE = ("compile",)


def saved_settings(run: Path) -> dict[str, Any]:
    """What a run was started with, from ``run/last.safetensors`` alone: ``model`` (the
    constructor's arguments), ``train`` (TrainConfig's fields) and ``data`` (source,
    fingerprint, validation fraction)."""
    flow, _, state, _ = _load_state(run)
    return _settings(run, flow, state)


def _load_state(run: Path):
    if not (Path(run) / TRAINING_STATE).exists():
        raise CheckpointError(f"{run}: holds no {TRAINING_STATE} to resume from")
    return load_training_state(run)


def _settings(run: Path, flow: Flow, state: dict[str, Any]) -> dict[str, Any]:
    return {"model": flow.config, "train": state["config"], "data": _run_info(run, state)["data"]}


def _run_info(run: Path, state: dict[str, Any]) -> dict[str, Any]:
    """The run's settings from its training state (or, for runs saved before the state held
    them, from model.json)."""
    info = state.get("run")
    if not info and (Path(run) / MODEL_CONFIG).exists():
        info = read_model_config(run)
    data = info.get("data") if isinstance(info, dict) else None
    if not isinstance(data, dict) or not {"fingerprint", "val_fraction"} <= set(data):
        raise CheckpointError(f"{run}: the training state does not record its data split")
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


def train_run(
    run: Path,
    x: np.ndarray,
    model: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    val_fraction: float | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = False,
    data_info: dict[str, Any] | None = None,
    levels: int | None = None,
) -> tuple[Flow, History]:
    """Fit a flow to the rows of ``x`` and keep everything in the folder ``run``.

    Tables: ``x`` is (N, D); ``model`` holds RealNVP's arguments (``features`` is taken from
    ``x``); standardization is always on, with the training rows' mean and std (in float64),
    so densities are in the data's own units.

    ``val_fraction`` of the rows (0.1 if None) are held out for validation, drawn with
    ``config.seed``.

    Images: pass ``levels``; ``x`` is (N, C, H, W) integer grey levels and ``model`` holds
    ``MultiScaleRealNVP``'s arguments (``shape`` and ``levels`` are taken from the data). Each
    training batch is dequantized with fresh noise drawn from ``(seed, step)``; the validation
    images are dequantized once, with a fixed seed.

    With ``resume``, training continues from ``run/last.safetensors`` with exactly the settings
    the run was started with, the split of ``x`` into training and validation rows included.
    Leave ``model``, ``config`` and ``val_fraction`` out (None) to keep the saved ones; any that
    are given must equal them, ``config.compile`` excepted (so pass the saved config,
    ``TrainConfig(**saved_settings(run)["train"])``, to change only ``compile``), else
    ``ResumeConflict`` names the first setting that differs.
    """
    run = Path(run)
    dev = resolve_device(device)
    if resume:
        return _resume(run, x, model, config, val_fraction, dev, progress)
    if (run / MODEL_CONFIG).exists() or (run / TRAINING_STATE).exists():
        raise FileExistsError(
            f"{run}: already holds a run; resume it, or train into another folder"
        )
    config = config or TrainConfig()
    val_fraction = 0.1 if val_fraction is None else val_fraction
    x_train, x_val = split(x, val_fraction, config.seed)
    shape = {"shape": list(x.shape[1:]), "levels": levels} if levels else {"features": x.shape[1]}
    info = {
        "data": {
            **(data_info or {}),
            "rows": len(x),
            **shape,
            "fingerprint": fingerprint(x),
            "val_fraction": val_fraction,
        },
        "train": config.to_dict(),
    }
    run.mkdir(parents=True, exist_ok=True)
    if levels:
        from realnvp.images import MultiScaleRealNVP

        flow = MultiScaleRealNVP(**{**(model or {}), "shape": x.shape[1:], "levels": levels})
    else:
        flow = standardized_flow(x_train, **(model or {}))
    trainer = _trainer(run, flow.to(dev), x_train, x_val, config, info, progress)
    return _fit(run, trainer)


def _resume(run, x, model, config, val_fraction, device, progress) -> tuple[Flow, History]:
    flow, optimizer_state, state, best = _load_state(run)
    given = {
        "model": model or {},
        "train": {} if config is None else config.to_dict(),
        "data": {"val_fraction": val_fraction} if val_fraction is not None else {},
    }
    check_resume(run, _settings(run, flow, state), given)
    info = _run_info(run, state)
    history = state["history"] if isinstance(state["history"], dict) else {}
    if best is None and history.get("best_step") and (run / MODEL_WEIGHTS).exists():
        best = load_model(run)[0].state_dict()  # saved before the state held its best weights
    if info["data"]["fingerprint"] != fingerprint(x):
        raise CheckpointError(
            f"{run}: was trained on other data than given now; resume with the same data"
        )
    train = {**state["config"]}
    if config is not None:
        train.update({k: getattr(config, k) for k in RESUME_MAY_CHANGE})
    config = saved_config(run, train)
    x_train, x_val = split(x, info["data"]["val_fraction"], config.seed)
    trainer = _trainer(run, flow.to(device), x_train, x_val, config, info, progress)
    try:
        trainer.load_state(
            state,
            optimizer_state,
            None if best is None else {k: v.to(device) for k, v in best.items()},
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{run}: damaged training state ({error})") from None
    return _fit(run, trainer)


def _fit(run: Path, trainer: Trainer) -> tuple[Flow, History]:
    history = trainer.fit()
    if trainer.rank == 0:
        text = json.dumps(history.to_dict(), indent=1) + "\n"
        atomic_write(run / "history.json", lambda tmp: tmp.write_text(text))
    return trainer.flow.eval(), history


def _trainer(run, flow, x_train, x_val, config, info, progress) -> Trainer:
    device = flow.device
    images = {}
    if flow.config.get("type") == "multiscale":
        from realnvp.images import Dequantizer, dequantize

        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        x_val = as_tensor(x_val) if len(x_val) else None
        if x_val is not None:
            x_val = dequantize(x_val, torch.Generator(device=device).manual_seed(VAL_NOISE_SEED))
        images = {"batch_transform": Dequantizer(config.seed), "dims": flow.dims}
    else:  # tables stay float64 up to the flow's standardization
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
        x_val = as_tensor(x_val) if len(x_val) else None
    return Trainer(
        flow,
        as_tensor(x_train),
        x_val,
        config,
        run=run,
        save_model=lambda f: save_model(run, f, info),
        progress=progress,
        run_info=info,
        **images,
    )
