"""Checkpoints that are safe to load: tensors in safetensors, everything else in JSON.

Nothing is ever unpickled, so loading a checkpoint cannot run code. Every file is written to a
temporary file in the same folder, flushed to disk (``fsync``), and renamed over the old one, and
the rename is flushed too, so a crash or a power cut while writing leaves the previous file
intact.

A run folder holds:

- ``model.safetensors`` and ``model.json``: the best weights so far (the best moving average of
  them, with ``TrainConfig.ema``; the data's statistics among them, as buffers), and what
  rebuilds the model (``flow.spec``: its type and constructor arguments) with the run's
  settings; what ``eval``/``sample``/... load.
- ``last.safetensors``: the training state for ``--resume``, complete on its own: weights, best
  weights so far, the moving average (with ``ema``), optimizer, step, history, recipe, and the
  run's settings (data fingerprint, validation split).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from realnvp.files import atomic_write
from realnvp.models import Flow, build_flow

__all__ = [
    "CheckpointError",
    "build_and_load",
    "load_model",
    "load_training_state",
    "read_model_config",
    "save_model",
    "save_training_state",
]

MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model.json"
TRAINING_STATE = "last.safetensors"
#: the format written: 2 records each model's type (0.2.0); 1 (0.1.0) is still read
FORMAT = "realnvp-checkpoint-2"
READABLE = ("realnvp-checkpoint-1", FORMAT)


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or belongs to another model."""


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
    if raw.get("format") not in READABLE:
        raise CheckpointError(f"{path}: not a realnvp checkpoint (no '{FORMAT}' marker)")
    try:
        meta = {k: json.loads(v) for k, v in raw.items() if k != "format"}
    except ValueError:
        raise CheckpointError(f"{path}: damaged metadata (not JSON)") from None
    return tensors, meta


def _require(mapping: object, keys: Iterable[str], source: Path, what: str) -> dict[str, Any]:
    """``mapping`` itself, after checking that it is a dict holding ``keys``."""
    if not isinstance(mapping, dict):
        raise CheckpointError(f"{source}: damaged checkpoint ({what} is not a mapping)")
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise CheckpointError(f"{source}: damaged checkpoint ({what} lacks {', '.join(missing)})")
    return mapping


def save_model(run: Path, flow: Flow, info: dict[str, Any]) -> None:
    """Write the model's weights and ``model.json`` (its config plus ``info``) into ``run``."""
    run = Path(run)
    config = {"format": FORMAT, "model": flow.spec, **info}
    _save_tensors(run / MODEL_WEIGHTS, flow.state_dict(), {"model": flow.spec})
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
    if not isinstance(config, dict) or config.get("format") not in READABLE:
        raise CheckpointError(f"{path}: not a realnvp model config")
    return config


def build_and_load(config: dict[str, Any], tensors: dict[str, Tensor], source: Path) -> Flow:
    """Rebuild a flow from its config and load weights that must match it exactly."""
    try:
        flow = build_flow(config)
    except (TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{source}: bad model config ({error})") from None
    _check_weights(flow, tensors, source)
    flow.load_state_dict(tensors)
    return flow


def _check_weights(flow: Flow, tensors: dict[str, Tensor], source: Path) -> None:
    """Refuse weights whose names or shapes are not exactly the flow's."""
    expected = flow.state_dict()
    if set(expected) != set(tensors) or any(
        expected[k].shape != tensors[k].shape for k in expected
    ):
        raise CheckpointError(f"{source}: the weights belong to another model than its config")


def load_model(run: Path) -> tuple[Flow, dict[str, Any]]:
    """The best model of a run folder, in evaluation mode, and its ``model.json``."""
    run = Path(run)
    config = _require(read_model_config(run), ["model"], run / MODEL_CONFIG, "the config")
    tensors, meta = _load_tensors(run / MODEL_WEIGHTS)
    if meta.get("model") != config["model"]:
        raise CheckpointError(
            f"{run}: {MODEL_WEIGHTS} and {MODEL_CONFIG} are from different models"
        )
    flow = build_and_load(config["model"], tensors, run / MODEL_WEIGHTS)
    return flow.eval(), config


def save_training_state(
    run: Path,
    flow: Flow,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    best: dict[str, Tensor] | None = None,
    average: dict[str, Tensor] | None = None,
) -> None:
    """Everything ``--resume`` needs, in one file written at once: the weights, the best weights
    so far (``best``, if any), the moving average of the parameters (``average``, when the
    recipe has ``ema``), the optimizer moments, and the JSON ``state`` (step, scheduler,
    history, recipe, the run's settings)."""
    tensors = {f"model.{k}": v for k, v in flow.state_dict().items()}
    if best is not None:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    if average is not None:
        tensors.update({f"average.{k}": v for k, v in average.items()})
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for name, value in slots.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value)
    meta = {"model": flow.spec, "param_groups": opt["param_groups"], "state": state}
    _save_tensors(Path(run) / TRAINING_STATE, tensors, meta)


#: what the JSON state of ``last.safetensors`` must hold to resume
STATE_KEYS = ("step", "bad_evals", "history", "scheduler", "config")


def load_training_state(
    run: Path,
) -> tuple[
    Flow, dict[str, Any], dict[str, Any], dict[str, Tensor] | None, dict[str, Tensor] | None
]:
    """The flow, the optimizer's state_dict, the JSON state, the best weights (None if no
    validation NLL was finite yet) and the moving average of the parameters (None without
    ``ema``) saved by ``save_training_state``; every part checked."""
    path = Path(run) / TRAINING_STATE
    tensors, meta = _load_tensors(path)
    _require(meta, ["model", "param_groups", "state"], path, "the metadata")
    state = _require(meta["state"], STATE_KEYS, path, "the training state")
    groups = meta["param_groups"]
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
    ):
        raise CheckpointError(f"{path}: damaged checkpoint (bad optimizer param_groups)")
    parts: dict[str, dict[str, Tensor]] = {"model.": {}, "best.": {}, "average.": {}}
    slots: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        prefix = key[: key.find(".") + 1]
        if prefix in parts:
            parts[prefix][key[len(prefix) :]] = value
        elif prefix == "optimizer." and key.count(".") >= 2 and key.split(".")[1].isdigit():
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
        else:
            raise CheckpointError(f"{path}: damaged checkpoint (unexpected tensor {key!r})")
    flow = build_and_load(meta["model"], parts["model."], path)
    best = parts["best."] or None
    if best is not None:
        _check_weights(flow, best, path)
    average = parts["average."] or None
    if average is not None:
        _check_average(flow, average, path)
    indices = {i for g in groups for i in g["params"]}
    if slots and (not set(slots) <= indices or len({frozenset(v) for v in slots.values()}) != 1):
        raise CheckpointError(f"{path}: damaged checkpoint (optimizer state of other parameters)")
    return flow, {"state": slots, "param_groups": groups}, state, best, average


def _check_average(flow: Flow, average: dict[str, Tensor], path: Path) -> None:
    """Refuse a moving average that is not one tensor of the right shape per parameter."""
    shapes = {k: tuple(p.shape) for k, p in flow.named_parameters()}
    if {k: tuple(v.shape) for k, v in average.items()} != shapes:
        raise CheckpointError(f"{path}: damaged checkpoint (a moving average of other weights)")
