"""Bijections: invertible maps with tractable log-determinants, data to latent in ``forward``."""

from realnvp.bijections.base import Bijection, Compose, Inverse, sum_except_batch
from realnvp.bijections.coupling import AdditiveCoupling, AffineCoupling
from realnvp.bijections.elementwise import Permutation, Standardize
from realnvp.bijections.masks import alternating_masks, half_mask

__all__ = [
    "AdditiveCoupling",
    "AffineCoupling",
    "Bijection",
    "Compose",
    "Inverse",
    "Permutation",
    "Standardize",
    "alternating_masks",
    "half_mask",
    "sum_except_batch",
]
