"""Figures of an image model: sample grids, reconstructions, and the paper's latent manifold."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from numpy.typing import NDArray
from torch import Tensor

from realnvp.models import MultiScaleRealNVP


def to_pixels(flow: MultiScaleRealNVP, x: Tensor) -> NDArray:
    """Continuous model output to displayable grey levels in [0, 1]: the discrete levels
    (``flow.to_data``) rescaled."""
    return flow.to_data(x) / (flow.levels - 1)


def mosaic(images: NDArray, cols: int, pad: int = 1) -> NDArray:
    """(N, C, H, W) in [0, 1] -> one (rows*(H+pad), cols*(W+pad)[, 3]) image, row by row."""
    n, c, h, w = images.shape
    rows = math.ceil(n / cols)
    out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c))
    for k in range(n):
        i, j = divmod(k, cols)
        top, left = pad + i * (h + pad), pad + j * (w + pad)
        out[top : top + h, left : left + w] = images[k].transpose(1, 2, 0)
    return out[..., 0] if c == 1 else out


def _show(ax, image: NDArray, title: str) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


@torch.no_grad()
def plot_samples(
    flow: MultiScaleRealNVP,
    temperatures: tuple[float, ...] = (1.0, 0.7),
    n: int = 64,
    seed: int = 0,
) -> Figure:
    """One grid of ``n`` samples per temperature, from the same base draws scaled. A
    class-conditional model draws one row per class instead, ``sqrt(n)`` samples of each."""
    flow.eval()
    cols = int(math.sqrt(n))
    labels = None
    if flow.context_shape is not None:
        labels = torch.arange(flow.num_classes).repeat_interleave(cols)
        n = len(labels)
    g = torch.Generator().manual_seed(seed)
    h = None if labels is None else flow.embed(labels.to(flow.device))
    fig = Figure(figsize=(4 * len(temperatures), 4.3), layout="constrained")
    axes = fig.subplots(1, len(temperatures), squeeze=False)[0]
    for ax, t in zip(axes, temperatures, strict=True):
        z = flow.base.sample(n, t, torch.Generator().set_state(g.get_state()), context=h)
        title = f"samples, T = {t}" + ("" if labels is None else ", one row per class")
        _show(ax, mosaic(to_pixels(flow, flow.decode(z, labels)), cols), title)
    return fig


@torch.no_grad()
def plot_reconstructions(
    flow: MultiScaleRealNVP, x: Tensor, cols: int = 8, labels: Tensor | None = None
) -> Figure:
    """Test images ``x`` (dequantized) beside ``decode(encode(x))``, with the largest error
    (given the images' ``labels``, for a class-conditional model)."""
    flow.eval()
    x_rec = flow.decode(flow.encode(x, labels), labels)
    error = (x_rec - x).abs().max().item()
    fig = Figure(figsize=(8, 2.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    _show(left, mosaic(to_pixels(flow, x), cols), "test images x")
    title = f"decode(encode(x)), max |error| {error:.1e}"
    _show(right, mosaic(to_pixels(flow, x_rec), cols), title)
    return fig


@torch.no_grad()
def plot_manifold(
    flow: MultiScaleRealNVP, x4: Tensor, steps: int = 8, label: int | None = None
) -> Figure:
    """The paper's manifold figure: decode
    ``z = cos(a) (cos(b) z1 + sin(b) z2) + sin(a) (cos(b) z3 + sin(b) z4)`` over a grid of
    ``a, b`` in ``[0, pi/2]``, where ``z1..z4`` encode four test images. The corners are the four
    images; the sweep keeps the norm of ``z`` near that of a typical latent. A class-conditional
    model encodes and decodes with one ``label`` (four images of that class)."""
    flow.eval()
    z = flow.encode(x4, label)
    angles = torch.linspace(0, math.pi / 2, steps)
    grid = []
    for a in angles:
        for b in angles:
            grid.append(
                torch.cos(a) * (torch.cos(b) * z[0] + torch.sin(b) * z[1])
                + torch.sin(a) * (torch.cos(b) * z[2] + torch.sin(b) * z[3])
            )
    images = to_pixels(flow, flow.decode(torch.stack(grid), label))
    fig = Figure(figsize=(5, 5.3), layout="constrained")
    _show(fig.subplots(), mosaic(images, steps), "latent plane through 4 test images")
    return fig
