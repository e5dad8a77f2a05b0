"""Boolean coupling masks. ``True`` marks the features a coupling passes through unchanged and
conditions on; ``False`` marks the features it transforms."""

from __future__ import annotations

import torch
from torch import Tensor

from realnvp.errors import ConfigError


def half_mask(features: int, first: bool = True) -> Tensor:
    """Keep the first ``ceil(D / 2)`` features (``first=True``) or the complement.

    Examples:
        >>> half_mask(5).tolist(), half_mask(5, first=False).tolist()
        ([True, True, True, False, False], [False, False, False, True, True])
    """
    if features < 2:
        raise ConfigError(f"a coupling needs at least 2 features, got features={features}")
    mask = torch.arange(features) < (features + 1) // 2
    return mask if first else ~mask


def alternating_masks(first: Tensor, num_layers: int) -> list[Tensor]:
    """Masks for ``num_layers`` couplings: ``first``, its complement, ``first``, ...; after any
    two consecutive layers every feature has been transformed.

    Examples:
        >>> [m.tolist() for m in alternating_masks(half_mask(2), 3)]
        [[True, False], [False, True], [True, False]]
    """
    first = validate_mask(first)
    return [first if i % 2 == 0 else ~first for i in range(num_layers)]


def rolling_masks(first: Tensor, num_layers: int) -> list[Tensor]:
    """Masks for ``num_layers`` couplings that alternate like ``alternating_masks`` but roll
    the pair by one feature every two layers: ``first``, ``~first``, ``roll(first, 1)``,
    ``~roll(first, 1)``, ... With alternating halves two features of the same half never
    condition on each other; rolled, every pair of features is split by some layer.

    Examples:
        >>> [m.int().tolist() for m in rolling_masks(half_mask(4), 4)]
        [[1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0], [1, 0, 0, 1]]
    """
    first = validate_mask(first)
    rolled = [torch.roll(first, i // 2, dims=0) for i in range(num_layers)]
    return [m if i % 2 == 0 else ~m for i, m in enumerate(rolled)]


def validate_mask(mask: Tensor) -> Tensor:
    """Check a user's mask: boolean, with at least one kept and one transformed entry."""
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise ConfigError(f"a mask must be boolean, got dtype {mask.dtype}")
    if mask.dim() == 0:
        raise ConfigError("a mask needs at least one dimension")
    if bool(mask.all()) or not bool(mask.any()):
        raise ConfigError(
            "a mask must keep at least one feature (True) and transform at least one (False)"
        )
    return mask


def checkerboard_mask(channels: int, height: int, width: int, parity: int = 1) -> Tensor:
    """The paper's spatial checkerboard (section 3.4): keep the pixels whose row plus column is
    odd (``parity=1``) or even (``parity=0``), in every channel; shape ``(C, H, W)``.

    Examples:
        >>> checkerboard_mask(1, 2, 2)[0].tolist()
        [[False, True], [True, False]]
    """
    if min(channels, height, width) < 1 or height * width < 2:
        raise ConfigError(
            f"a checkerboard needs at least 2 pixels, got shape ({channels}, {height}, {width})"
        )
    ij = torch.arange(height)[:, None] + torch.arange(width)[None, :]
    return (ij % 2 == parity % 2).expand(channels, height, width).clone()


def channel_mask(channels: int, height: int, width: int, first: bool = True) -> Tensor:
    """The paper's channel-wise mask: keep the first half of the channels (``first=True``) or
    the second half, at every pixel; shape ``(C, H, W)``.

    Examples:
        >>> channel_mask(4, 1, 1).flatten().tolist()
        [True, True, False, False]
    """
    if channels < 2 or channels % 2:
        raise ConfigError(f"a channel mask needs an even number of channels, got {channels}")
    keep = torch.arange(channels) < channels // 2
    return (keep if first else ~keep)[:, None, None].expand(channels, height, width).clone()


def packed_checkerboard_mask(channels: int, parity: int = 1) -> Tensor:
    """A checkerboard as a channel split of the squeezed image: ``Squeeze`` puts pixel
    ``(2h + i, 2w + j)`` of channel ``c`` in channel ``4c + 2i + j``, and ``i + j`` has the
    parity of the pixel's row plus column, so ``checkerboard_mask(C, H, W, parity)`` keeps the
    same pixels of ``x`` as this 1-D mask keeps channels of ``squeeze(x)``; shape ``(4C,)``.

    Examples:
        >>> packed_checkerboard_mask(1).tolist()  # channels 1 and 2: pixels (0, 1) and (1, 0)
        [False, True, True, False]
    """
    if channels < 1:
        raise ConfigError(f"a checkerboard needs at least one channel, got {channels}")
    k = torch.arange(4 * channels) % 4
    return (k // 2 + k % 2) % 2 == parity % 2
