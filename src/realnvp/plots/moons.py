"""The four figures of the two-moons depth study."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import NDArray

from realnvp.models import Flow
from realnvp.training import History

# Two moons in colours that stay apart in grey scale (dark navy, light orange) and in shape.
MOON_COLORS = ("#1b3a6b", "#f0a030")
MOON_MARKERS = ("o", "^")
MOON_NAMES = ("outer moon", "inner moon")
# Depths get a sequential palette (dark to light), which also reads in grey scale.
DENSITY_CMAP = "viridis"


@dataclass
class DepthResult:
    """What the figures need to know about one trained depth."""

    layers: int
    flow: Flow
    test_nll: float
    gap: float
    history: History
    row: dict = field(default_factory=dict)  # the study's table row


def _scatter_moons(ax: Axes, points: NDArray, labels: NDArray, size: float = 3.0) -> None:
    for k in (0, 1):
        sel = labels == k
        ax.scatter(
            points[sel, 0],
            points[sel, 1],
            s=size,
            c=MOON_COLORS[k],
            marker=MOON_MARKERS[k],
            linewidths=0,
            alpha=0.7,
            label=MOON_NAMES[k],
            rasterized=True,
        )


def _grid_lines(
    xlim: tuple[float, float], ylim: tuple[float, float], n: int = 11, resolution: int = 300
) -> list[NDArray]:
    """Horizontal and vertical lines of a grid, each a (resolution, 2) polyline."""
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    tx, ty = np.linspace(*xlim, resolution), np.linspace(*ylim, resolution)
    lines = [np.stack([np.full_like(ty, v), ty], 1) for v in xs]
    lines += [np.stack([tx, np.full_like(tx, v)], 1) for v in ys]
    return lines


@torch.no_grad()
def _encode(flow: Flow, x: NDArray) -> NDArray:
    return flow.encode(flow.as_input(x)).double().cpu().numpy()


@torch.no_grad()
def _log_prob(flow: Flow, x: NDArray) -> NDArray:
    return flow.log_prob(flow.as_input(x)).double().cpu().numpy()


@torch.no_grad()
def _decode(flow: Flow, z: NDArray) -> NDArray:
    return (
        flow.decode(torch.as_tensor(z, dtype=flow.dtype, device=flow.device)).double().cpu().numpy()
    )


def _draw_lines(ax: Axes, lines: Sequence[NDArray]) -> None:
    for line in lines:
        ax.plot(line[:, 0], line[:, 1], color="0.55", linewidth=0.6, zorder=0)


def _style_panel(ax: Axes, title: str, space: str, xlim: tuple, ylim: tuple) -> None:
    ax.set_title(title)
    if space == "X":
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
    else:
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
    ax.set_xlabel(f"${space.lower()}_1$")
    ax.set_ylabel(f"${space.lower()}_2$")
    ax.set_aspect("equal")


def plot_mapping(
    flow: Flow, x: NDArray, labels: NDArray, z_labels_from_x, title: str, seed: int = 0
) -> Figure:
    """The paper's Figure 1: x with a grid in X; f(x) with that grid mapped through f; prior
    samples z with a grid in Z; f^-1(z) with that grid mapped through f^-1.

    ``z_labels_from_x`` maps decoded points to the moon they fall nearest, to colour the prior
    samples.
    """
    flow.eval()
    xlim = (float(x[:, 0].min()) - 0.3, float(x[:, 0].max()) + 0.3)
    ylim = (float(x[:, 1].min()) - 0.3, float(x[:, 1].max()) + 0.3)
    x_grid = _grid_lines(xlim, ylim)
    z_grid = _grid_lines((-3.0, 3.0), (-3.0, 3.0), n=13)
    z_prior = torch.randn(len(x), 2, generator=torch.Generator().manual_seed(seed)).numpy()
    x_from_prior = _decode(flow, z_prior)
    prior_labels = z_labels_from_x(x_from_prior)
    fig = Figure(figsize=(11, 9.5), layout="constrained")
    axes = fig.subplots(2, 2)
    panels = [  # (axes, points, labels, grid lines, title, space)
        (axes[0, 0], x, labels, x_grid, "Inference: $x \\sim \\hat p_X$, grid in $X$", "X"),
        (
            axes[0, 1],
            _encode(flow, x),
            labels,
            [_encode(flow, g) for g in x_grid],
            "Inference: $z = f(x)$, the grid mapped by $f$",
            "Z",
        ),
        (axes[1, 1], z_prior, prior_labels, z_grid, "Generation: $z \\sim p_Z$, grid in $Z$", "Z"),
        (
            axes[1, 0],
            x_from_prior,
            prior_labels,
            [_decode(flow, g) for g in z_grid],
            "Generation: $x = f^{-1}(z)$, the grid mapped by $f^{-1}$",
            "X",
        ),
    ]
    for ax, points, point_labels, lines, panel_title, space in panels:
        _draw_lines(ax, lines)
        _scatter_moons(ax, points, point_labels)
        _style_panel(ax, panel_title, space, xlim, ylim)
    axes[0, 0].legend(loc="upper right", markerscale=4, fontsize=9)
    axes[1, 0].text(
        0.02,
        0.02,
        "colour: the moon whose exact density\nis larger at the decoded point",
        transform=axes[1, 0].transAxes,
        fontsize=8,
        va="bottom",
    )
    fig.suptitle(title, fontsize=13)
    return fig


def _panel_grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def plot_densities(
    results: Sequence[DepthResult],
    x: NDArray,
    labels: NDArray,
    limit_nll: float,
    resolution: int = 200,
) -> Figure:
    """Figure 2: the data beside the learned density exp(log p(x)) for each depth."""
    xlim = (float(x[:, 0].min()) - 0.4, float(x[:, 0].max()) + 0.4)
    ylim = (float(x[:, 1].min()) - 0.4, float(x[:, 1].max()) + 0.4)
    gx, gy = np.linspace(*xlim, resolution), np.linspace(*ylim, resolution)
    xx, yy = np.meshgrid(gx, gy)
    grid = np.stack([xx.ravel(), yy.ravel()], 1)
    rows, cols = _panel_grid(len(results) + 1)
    fig = Figure(figsize=(3.6 * cols, 3.0 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    _scatter_moons(axes[0], x, labels, size=1.5)
    axes[0].set_title(f"data ({len(x):,} test points)\nexact limit NLL {limit_nll:.3f}")
    densities = []
    for r in results:
        r.flow.eval()
        densities.append(np.exp(_log_prob(r.flow, grid)).reshape(xx.shape))
    # One colour scale for every panel, set by the deepest (best) model, so panels compare.
    vmax = float(np.quantile(densities[-1], 0.999))
    for ax, r, density in zip(axes[1:], results, densities, strict=False):
        ax.imshow(
            density,
            origin="lower",
            extent=(*xlim, *ylim),
            cmap=DENSITY_CMAP,
            vmin=0,
            vmax=vmax,
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_title(
            f"{r.layers} coupling layer{'s' if r.layers > 1 else ''}\n"
            f"test NLL {r.test_nll:.3f} (gap {r.gap:+.3f})"
        )
    for ax in axes:
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    for ax in axes[len(results) + 1 :]:
        ax.set_visible(False)
    fig.suptitle(
        "Learned density $p_X(x)$ by number of coupling layers "
        "(NLL in nats per point; gap = test NLL - exact limit)",
        fontsize=12,
    )
    return fig


def plot_losses(results: Sequence[DepthResult], limit_nll: float) -> Figure:
    """Figure 3: training and validation NLL against step, one line per depth."""
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_train, ax_val = fig.subplots(1, 2, sharey=True)
    colors = _depth_colors(len(results))
    finals = [min(r.history.val_nll) for r in results]
    top = max(finals) + 0.6
    for r, color in zip(results, colors, strict=True):
        label = f"{r.layers} layer{'s' if r.layers > 1 else ''}"
        ax_train.plot(r.history.step, r.history.train_nll, color=color, linewidth=1.2, label=label)
        ax_val.plot(r.history.step, r.history.val_nll, color=color, linewidth=1.2, label=label)
    for ax, what in ((ax_train, "training"), (ax_val, "validation")):
        ax.axhline(
            limit_nll,
            color="black",
            linestyle="--",
            linewidth=1.0,
            label=f"exact limit {limit_nll:.3f}",
        )
        ax.set_ylim(limit_nll - 0.1, top)
        ax.set_xlabel("training step")
        ax.set_title(f"{what} NLL")
        ax.grid(alpha=0.3)
    ax_train.set_ylabel("NLL (nats per point, data units)")
    ax_val.legend(loc="upper right", fontsize=9)
    fig.suptitle("Training loss by number of coupling layers", fontsize=12)
    return fig


def _depth_colors(n: int) -> list:
    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(n - 1, 1)) for i in range(n)]


def plot_latents(results: Sequence[DepthResult], x: NDArray, labels: NDArray) -> Figure:
    """Figure 4: the latent codes f(x) of test points by moon, over the prior's contours."""
    rows, cols = _panel_grid(len(results))
    fig = Figure(figsize=(3.6 * cols, 3.5 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    t = np.linspace(0, 2 * np.pi, 200)
    for ax, r in zip(axes, results, strict=False):
        r.flow.eval()
        z = _encode(r.flow, x)
        for radius in (1, 2, 3):
            ax.plot(
                radius * np.cos(t),
                radius * np.sin(t),
                color="0.5",
                linewidth=0.8,
                linestyle=":",
                zorder=0,
            )
        _scatter_moons(ax, z, labels, size=1.5)
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
        ax.set_aspect("equal")
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
        ax.set_title(
            f"{r.layers} coupling layer{'s' if r.layers > 1 else ''}, test NLL {r.test_nll:.3f}"
        )
    for ax in axes[len(results) :]:
        ax.set_visible(False)
    axes[0].legend(loc="upper left", markerscale=4, fontsize=8)
    fig.suptitle(
        "Latent space $z = f(x)$ of test points, by moon; dotted circles: 1, 2, 3 "
        "standard deviations of the prior",
        fontsize=12,
    )
    return fig
