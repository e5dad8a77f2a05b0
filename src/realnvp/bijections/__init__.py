"""Bijections: invertible maps with tractable log-determinants, data to latent in ``forward``."""

from realnvp.bijections.base import Bijection, Compose, Inverse, sum_except_batch
from realnvp.bijections.coupling import AdditiveCoupling, AffineCoupling, ContextAffine
from realnvp.bijections.elementwise import Logit, Permutation, Standardize
from realnvp.bijections.linear import InvertibleConv1x1
from realnvp.bijections.masks import (
    alternating_masks,
    channel_mask,
    checkerboard_mask,
    half_mask,
    packed_checkerboard_mask,
    rolling_masks,
)
from realnvp.bijections.normalization import ActNorm, BatchNorm
from realnvp.bijections.reshape import FactorOut, Squeeze
from realnvp.bijections.spline import SplineCoupling, rational_quadratic_spline

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "BatchNorm",
    "Bijection",
    "Compose",
    "ContextAffine",
    "FactorOut",
    "Inverse",
    "InvertibleConv1x1",
    "Logit",
    "Permutation",
    "SplineCoupling",
    "Squeeze",
    "Standardize",
    "alternating_masks",
    "channel_mask",
    "checkerboard_mask",
    "half_mask",
    "packed_checkerboard_mask",
    "rational_quadratic_spline",
    "rolling_masks",
    "sum_except_batch",
]
