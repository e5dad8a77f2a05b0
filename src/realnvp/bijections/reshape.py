"""The two pieces of the paper's multi-scale architecture (section 3.6): ``Squeeze`` trades
space for channels, ``FactorOut`` sends half the channels to the latent and the other half on
through the next scale."""

from __future__ import annotations

import torch
from torch import Tensor

from realnvp.bijections.base import Bijection, forward, inverse


class Squeeze(Bijection):
    """Trade space for channels: each channel's 2x2 sub-squares become 4 channels,
    ``(B, C, H, W) -> (B, 4C, H/2, W/2)``; volume preserving.

    Output channel ``4c + 2i + j`` holds pixel ``(2h + i, 2w + j)`` of input channel ``c``, so the
    first half of the channels (a channel-wise mask) is never a checkerboard.

    Examples:
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> Squeeze()(x)[0].flatten().tolist()
        [0.0, 1.0, 2.0, 3.0]
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs an even height and width, got {h}x{w}")
        z = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return z.reshape(b, 4 * c, h // 2, w // 2), x.new_zeros(b)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = z.shape
        if c % 4:
            raise ValueError(f"unsqueeze needs a multiple of 4 channels, got {c}")
        x = z.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // 4, 2 * h, 2 * w), z.new_zeros(b)


class FactorOut(Bijection):
    """Factor out half the channels (paper eq. 13-16): the first half is *factored* out, straight
    to the latent; the second half is *carried* on through ``inner``; the two are put back side
    by side.

    ``forward(x) = cat([x1, inner(x2)])`` with ``x1, x2`` the two halves of ``x``'s channels.
    """

    def __init__(self, inner: Bijection):
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        factored, carried = x.chunk(2, dim=1)
        carried, log_det = forward(self.inner, carried, context)
        return torch.cat([factored, carried], dim=1), log_det

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        factored, carried = z.chunk(2, dim=1)
        carried, log_det = inverse(self.inner, carried, context)
        return torch.cat([factored, carried], dim=1), log_det
