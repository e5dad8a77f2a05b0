"""A training run in a folder: split the data, train, checkpoint, resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realnvp.flows import Flow, RealNVP
from realnvp.training.checkpoint import (
    MODEL_CONFIG,
    TRAINING_STATE,
    CheckpointError,
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
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(len(x))
    n_val = round(val_fraction * len(x))
    if val_fraction > 0:
        n_val = min(max(n_val, 1), len(x) - 1)
    return x[perm[n_val:]], x[perm[:n_val]]


def standardized_flow(x_train: np.ndarray, **model: Any) -> RealNVP:
    """A RealNVP that standardizes with the mean and std of ``x_train`` (a constant column
    gets std 1), so it trains on standardized values and reports densities in data units."""
    flow = RealNVP(**{**model, "features": x_train.shape[1], "standardize": True})
    std = x_train.std(0)
    flow.set_standardization(
        torch.as_tensor(x_train.mean(0), dtype=torch.float32),
        torch.as_tensor(np.where(std > 0, std, 1.0), dtype=torch.float32),
    )
    return flow


def fingerprint(x: np.ndarray) -> str:
    """A short hash of the data, so a resumed run can check it sees the same rows."""
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float64).tobytes()).hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def train_run(
    run: Path,
    x: np.ndarray,
    model: dict[str, Any],
    config: TrainConfig,
    val_fraction: float = 0.1,
    resume: bool = False,
    device: str = "auto",
    progress: bool = False,
    data_info: dict[str, Any] | None = None,
    levels: int | None = None,
) -> tuple[Flow, History]:
    """Fit a flow to the rows of ``x`` and keep everything in the folder ``run``.

    Tables: ``x`` is (N, D); ``model`` holds RealNVP's arguments (``features`` is taken from
    ``x``); standardization is always on, with the training rows' mean and std, so densities are
    in the data's own units.

    Images: pass ``levels``; ``x`` is (N, C, H, W) integer grey levels and ``model`` holds
    ``MultiScaleRealNVP``'s arguments (``shape`` and ``levels`` are taken from the data). Each
    training batch is dequantized with fresh noise drawn from ``(seed, step)``; the validation
    images are dequantized once, with a fixed seed.

    With ``resume``, training continues from ``run/last.safetensors`` with the saved settings.
    """
    run = Path(run)
    dev = resolve_device(device)
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
    if resume:
        flow, optimizer_state, state = load_training_state(run)
        saved = read_model_config(run)
        if saved["data"]["fingerprint"] != info["data"]["fingerprint"]:
            raise CheckpointError(
                f"{run}: was trained on other data than given now; resume with the same DATA"
            )
        config = TrainConfig(**state["config"])
        info = {k: saved[k] for k in saved if k not in ("format", "model")}
        best, _ = load_model(run)
        flow = flow.to(dev)
        trainer = _trainer(run, flow, x_train, x_val, config, info, dev, progress)
        trainer.load_state(
            state, optimizer_state, {k: v.to(dev) for k, v in best.state_dict().items()}
        )
    else:
        if (run / MODEL_CONFIG).exists() or (run / TRAINING_STATE).exists():
            raise FileExistsError(
                f"{run}: already holds a run; pass --resume to continue it, or choose another --out"
            )
        run.mkdir(parents=True, exist_ok=True)
        if levels:
            from realnvp.images import MultiScaleRealNVP

            flow = MultiScaleRealNVP(**{**model, "shape": x.shape[1:], "levels": levels})
            flow = flow.to(dev)
        else:
            flow = standardized_flow(x_train, **model).to(dev)
        trainer = _trainer(run, flow, x_train, x_val, config, info, dev, progress)
    history = trainer.fit()
    if trainer.rank == 0:
        (run / "history.json").write_text(json.dumps(history.to_dict(), indent=1) + "\n")
    return flow.eval(), history


def _trainer(run, flow, x_train, x_val, config, info, device, progress) -> Trainer:
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    x_train = as_tensor(x_train)
    x_val = as_tensor(x_val) if len(x_val) else None
    images = {}
    if flow.config.get("type") == "multiscale":
        from realnvp.images import Dequantizer, dequantize

        if x_val is not None:
            x_val = dequantize(x_val, torch.Generator(device=device).manual_seed(VAL_NOISE_SEED))
        images = {"batch_transform": Dequantizer(config.seed), "dims": flow.dims}
    return Trainer(
        flow,
        x_train,
        x_val,
        config,
        run=run,
        save_model=lambda f: save_model(run, f, info),
        progress=progress,
        **images,
    )
