"""realnvp: exact density estimation with Real NVP normalizing flows (Dinh et al., ICLR 2017)."""

from realnvp.bijections import (
    AdditiveCoupling,
    AffineCoupling,
    Bijection,
    Compose,
    Inverse,
    Permutation,
    Standardize,
)
from realnvp.distributions import StandardNormal
from realnvp.estimator import RealNVPDensity
from realnvp.flows import Flow, RealNVP
from realnvp.nn import MLP

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "AdditiveCoupling",
    "AffineCoupling",
    "Bijection",
    "Compose",
    "Flow",
    "Inverse",
    "Permutation",
    "RealNVP",
    "RealNVPDensity",
    "StandardNormal",
    "Standardize",
    "__version__",
]
