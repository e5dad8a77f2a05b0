"""Checkpoints that are safe to load: tensors in safetensors, everything else in JSON.

Nothing is ever unpickled, so loading a checkpoint cannot run code. Every file is written to a
temporary file in the same folder and renamed over the old one, so a crash while writing leaves
the previous checkpoint intact.

A run folder holds:

- ``model.safetensors`` and ``model.json``: the best weights so far, and what rebuilds the model
  (its constructor arguments and the data's statistics); what ``eval``/``sample``/... load.
- ``last.safetensors``: the training state for ``--resume`` (weights, optimizer, step, history).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from realnvp.flows import Flow, RealNVP

MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model.json"
TRAINING_STATE = "last.safetensors"
FORMAT = "realnvp-checkpoint-1"
_UMASK = os.umask(0)
os.umask(_UMASK)


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or belongs to another model."""


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, then rename the temporary file over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> None:
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _load_tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path}: not a readable safetensors checkpoint (truncated, corrupted, or another "
            f"format such as a pickle): {str(error).splitlines()[0][:120]}"
        ) from None
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a realnvp checkpoint (no '{FORMAT}' marker)")
    return tensors, {k: json.loads(v) for k, v in raw.items() if k != "format"}


def save_model(run: Path, flow: Flow, info: dict[str, Any]) -> None:
    """Write the model's weights and ``model.json`` (its config plus ``info``) into ``run``."""
    run = Path(run)
    config = {"format": FORMAT, "model": flow.config, **info}
    _save_tensors(run / MODEL_WEIGHTS, flow.state_dict(), {"model": flow.config})
    atomic_write(run / MODEL_CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=2)))


def read_model_config(run: Path) -> dict[str, Any]:
    """``model.json`` of a run folder, checked."""
    path = Path(run) / MODEL_CONFIG
    if not Path(run).is_dir():
        raise CheckpointError(f"{run}: no such run folder")
    if not path.exists():
        raise CheckpointError(f"{run}: holds no {MODEL_CONFIG}; is it a 'realnvp train' run?")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a realnvp model config")
    return config


def build_flow(config: dict[str, Any]) -> Flow:
    """The model a config describes: ``MultiScaleRealNVP`` when its ``type`` is ``multiscale``,
    else ``RealNVP``; weights are not loaded."""
    if config.get("type") == "multiscale":
        from realnvp.images import MultiScaleRealNVP

        return MultiScaleRealNVP(**{k: v for k, v in config.items() if k != "type"})
    return RealNVP(**config)


def build_and_load(config: dict[str, Any], tensors: dict[str, Tensor], source: Path) -> Flow:
    """Rebuild a flow from its config and load weights that must match it exactly."""
    try:
        flow = build_flow(config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: bad model config ({error})") from None
    expected = flow.state_dict()
    if set(expected) != set(tensors) or any(
        expected[k].shape != tensors[k].shape for k in expected
    ):
        raise CheckpointError(f"{source}: the weights belong to another model than its config")
    flow.load_state_dict(tensors)
    return flow


def load_model(run: Path) -> tuple[Flow, dict[str, Any]]:
    """The best model of a run folder, in evaluation mode, and its ``model.json``."""
    run = Path(run)
    config = read_model_config(run)
    tensors, meta = _load_tensors(run / MODEL_WEIGHTS)
    if meta.get("model") != config.get("model"):
        raise CheckpointError(
            f"{run}: {MODEL_WEIGHTS} and {MODEL_CONFIG} are from different models"
        )
    flow = build_and_load(config["model"], tensors, run / MODEL_WEIGHTS)
    return flow.eval(), config


def save_training_state(
    run: Path, flow: Flow, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Everything ``--resume`` needs: weights, optimizer moments, and the JSON ``state``
    (step, scheduler, history, ...)."""
    tensors = {f"model.{k}": v for k, v in flow.state_dict().items()}
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for name, value in slots.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value)
    meta = {"model": flow.config, "param_groups": opt["param_groups"], "state": state}
    _save_tensors(Path(run) / TRAINING_STATE, tensors, meta)


def load_training_state(
    run: Path,
) -> tuple[Flow, dict[str, Any], dict[str, Any]]:
    """The flow, the optimizer's state_dict and the JSON state saved by ``save_training_state``."""
    path = Path(run) / TRAINING_STATE
    tensors, meta = _load_tensors(path)
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    flow = build_and_load(meta["model"], model, path)
    slots: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    return flow, {"state": slots, "param_groups": meta["param_groups"]}, meta["state"]
