"""Every kind of model by name, and the one place a saved config picks its class."""

from __future__ import annotations

from typing import Any

from realnvp.errors import ConfigError
from realnvp.models.flow import Flow
from realnvp.models.multiscale import MultiScaleRealNVP
from realnvp.models.realnvp import RealNVP

#: the model classes by the ``type`` their config records
KINDS: dict[str, type[Flow]] = {cls.kind: cls for cls in (RealNVP, MultiScaleRealNVP)}


def kind_of(config: dict[str, Any] | None) -> type[Flow]:
    """The class of the model ``config`` describes: its ``type`` (``RealNVP`` without one, as
    configs were written before the type was recorded for vectors)."""
    name = (config or {}).get("type", RealNVP.kind)
    if name not in KINDS:
        raise ConfigError(f"unknown model type {name!r}; known: {', '.join(KINDS)}", "type")
    return KINDS[name]


def build_flow(config: dict[str, Any]) -> Flow:
    """The model a saved ``flow.spec`` describes; weights are not loaded. Configs written before
    the log-scale cap existed rebuild without it, as they were trained."""
    return kind_of(config).from_config({"max_scale": None, **config})
