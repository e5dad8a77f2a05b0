"""realnvp: exact density estimation with Real NVP normalizing flows (Dinh et al., ICLR 2017)."""

from typing import Any

from realnvp.bijections import (
    AdditiveCoupling,
    AffineCoupling,
    Bijection,
    Compose,
    Inverse,
    Permutation,
    Standardize,
)
from realnvp.config import TrainConfig
from realnvp.distributions import ConditionalNormal, StandardNormal
from realnvp.models import Flow, MultiScaleRealNVP, RealNVP
from realnvp.nn import MLP

__version__ = "0.3.0.dev0"

__all__ = [
    "MLP",
    "AdditiveCoupling",
    "AffineCoupling",
    "Bijection",
    "Compose",
    "ConditionalNormal",
    "ConditionalRealNVPDensity",
    "Flow",
    "Inverse",
    "MultiScaleRealNVP",
    "Permutation",
    "RealNVP",
    "RealNVPDensity",
    "StandardNormal",
    "Standardize",
    "TrainConfig",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The estimator sits on top of training and scikit-learn; it loads on first use, so that
    # importing the models does not import the training stack (PEP 562).
    if name in ("RealNVPDensity", "ConditionalRealNVPDensity"):
        from realnvp.estimator import ConditionalRealNVPDensity, RealNVPDensity

        return {
            "RealNVPDensity": RealNVPDensity,
            "ConditionalRealNVPDensity": ConditionalRealNVPDensity,
        }[name]
    raise AttributeError(f"module 'realnvp' has no attribute {name!r}")
