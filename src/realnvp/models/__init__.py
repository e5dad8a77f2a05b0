"""The models: a ``Flow`` and its kinds, Real NVP for vectors and the multi-scale image model."""

from realnvp.models.flow import Flow, Metric
from realnvp.models.kinds import KINDS, build_flow, kind_of
from realnvp.models.multiscale import (
    Dequantizer,
    MultiScaleRealNVP,
    bits_per_dim,
    default_scales,
    dequantize,
)
from realnvp.models.realnvp import RealNVP

__all__ = [
    "KINDS",
    "Dequantizer",
    "Flow",
    "Metric",
    "MultiScaleRealNVP",
    "RealNVP",
    "bits_per_dim",
    "build_flow",
    "default_scales",
    "dequantize",
    "kind_of",
]
