"""The paper's image model: a multi-scale Real NVP over dequantized pixels (sections 3.3-4.1).

Each scale but the last runs 3 couplings with alternating checkerboard masks, a squeeze, 3
couplings with alternating channel-wise masks, and factors out half of its channels; the last scale
runs 4 checkerboard couplings. Every coupling is followed by a batch-norm bijection (optional;
Glow's actnorm and invertible 1x1 convolution are options too), and its conditioner is a ResNet
with weight norm whose width doubles at each scale. A ``Logit`` in front
maps pixels to the real line, inside the likelihood.

Bits per dimension, as the paper and its code report them: the model is a density over
dequantized pixels ``x + u`` (``x`` in ``{0, ..., K-1}``, ``u ~ U[0, 1)^D``), so
``-log_prob / (D log 2)`` is an upper bound on the discrete pixels' code length in bits per
dimension. Written for data scaled to ``[0, 1]`` as in the paper's code, the same number is
``(-log p([x + u] / K) + D log K) / (D log 2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, overload

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from realnvp import collectives
from realnvp.bijections import (
    ActNorm,
    AffineCoupling,
    BatchNorm,
    Bijection,
    Compose,
    FactorOut,
    Inverse,
    InvertibleConv1x1,
    Logit,
    Squeeze,
    channel_mask,
    checkerboard_mask,
    half_mask,
    packed_checkerboard_mask,
)
from realnvp.bijections.coupling import MAX_SCALE, Conditioner
from realnvp.config import TrainConfig
from realnvp.data.store import TableSummary
from realnvp.distributions import ConditionalNormal, StandardNormal
from realnvp.errors import ConfigError
from realnvp.models.flow import Flow, Metric
from realnvp.nn import ResNet


@overload
def bits_per_dim(log_prob: Tensor, dims: int) -> Tensor: ...
@overload
def bits_per_dim(log_prob: float, dims: int) -> float: ...
def bits_per_dim(log_prob: Tensor | float, dims: int) -> Tensor | float:
    """Bits per dimension from a log-density over dequantized pixels: ``-log_prob / (D log 2)``.

    Example: a density of ``exp(-1)`` over ``D = 2`` pixels costs ``1 / (2 log 2)`` bits per dim.
        >>> round(bits_per_dim(-1.0, 2), 6)
        0.721348
    """
    return -log_prob / (dims * math.log(2))


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization: integer grey levels ``x`` plus ``U[0, 1)`` noise (float32)."""
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    return x.to(torch.float32) + noise


class Dequantizer:
    """Dequantize training batches with noise drawn from ``(seed, step)`` alone, so a resumed
    run sees exactly the noise it would have seen. Under DistributedDataParallel the noise is
    drawn for the global batch and rank ``r`` of ``N`` takes rows ``r::N``, as it does of the
    batch: every rank gets different noise, and together they get the single-process noise."""

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, x: Tensor, step: int) -> Tensor:
        return x.to(torch.float32) + self.noise(x, step)

    def noise(self, x: Tensor, step: int) -> Tensor:
        """Uniform noise on [0, 1) of the shape of ``x``, this rank's share of the step's."""
        g = torch.Generator(device=x.device).manual_seed(self.seed * 1_000_003 + step)
        n, r = collectives.world_size(), collectives.rank()
        noise = torch.rand((len(x) * n, *x.shape[1:]), generator=g, device=x.device)
        return noise[r::n]


def default_scales(height: int, width: int) -> int:
    """Scales down to the paper's 4x4: halve while both sides stay even and at least 4.

    Example: 8x8 digits get 2 scales, 28x28 MNIST 3, 32x32 CIFAR-10 4.
        >>> default_scales(8, 8), default_scales(28, 28), default_scales(32, 32)
        (2, 3, 4)
    """
    scales = 1
    while height % 2 == 0 and width % 2 == 0 and min(height, width) // 2 >= 4:
        height, width, scales = height // 2, width // 2, scales + 1
    return scales


class _MaskedInput(nn.Module):
    """Give the conditioner the mask as an extra channel, so it knows which pixels are given."""

    mask_channel: Tensor  # buffer

    def __init__(self, mask: Tensor, net: nn.Module):
        super().__init__()
        self.register_buffer("mask_channel", mask[:1].to(torch.float32).unsqueeze(0))
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        m = self.mask_channel.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        return self.net(torch.cat([x, m], dim=1))


def _conditioner(mask: Tensor, hidden: int, blocks: int, checker: bool) -> Conditioner:
    """A ResNet from the coupling's channel counts; a checkerboard's also sees its mask."""
    if checker:
        return lambda c_in, c_out: _MaskedInput(mask, ResNet(c_in + 1, c_out, hidden, blocks))
    return lambda c_in, c_out: ResNet(c_in, c_out, hidden, blocks)


@dataclass(frozen=True)
class _Step:
    """What each coupling of the model comes with (``MultiScaleRealNVP``'s arguments)."""

    blocks: int
    batch_norm: bool
    actnorm: bool
    conv1x1: bool
    packed: bool
    scale_init: float
    max_scale: float | None
    classes: int


def _checkerboard(shape: tuple[int, int, int], parity: int, hidden: int, step: _Step) -> Bijection:
    """A checkerboard coupling of an image of ``shape``: masked as in the paper, or packed, a
    channel split of ``squeeze(x)`` (see ``MultiScaleRealNVP``; odd sizes stay masked)."""
    c, h, w = shape
    options = (step.scale_init, step.max_scale, step.classes)
    if step.packed and h % 2 == 0 and w % 2 == 0:
        mask = packed_checkerboard_mask(c, parity)
        net = _conditioner(mask, hidden, step.blocks, checker=False)
        return Compose([Squeeze(), AffineCoupling(mask, net, *options), Inverse(Squeeze())])
    mask = checkerboard_mask(c, h, w, parity)
    return AffineCoupling(mask, _conditioner(mask, hidden, step.blocks, True), *options)


def _channel_split(shape: tuple[int, int, int], first: bool, hidden: int, step: _Step) -> Bijection:
    """A channel-wise coupling: a masked image as in the paper, or packed, the kept channels."""
    c, h, w = shape
    mask = half_mask(c, first) if step.packed else channel_mask(c, h, w, first)
    net = _conditioner(mask, hidden, step.blocks, checker=False)
    return AffineCoupling(mask, net, step.scale_init, step.max_scale, step.classes)


def _scale(shape: tuple[int, int, int], scales_left: int, hidden: int, step: _Step) -> Bijection:
    c, h, w = shape
    layers: list[Bijection] = []

    def add(channels: int, coupling: Bijection) -> None:
        if step.actnorm:
            layers.append(ActNorm(channels))
        if step.conv1x1 and channels > 1:  # on one channel it would only scale it
            layers.append(InvertibleConv1x1(channels))
        layers.append(coupling)
        if step.batch_norm:
            layers.append(BatchNorm(channels))

    if scales_left == 1:  # the last scale: 4 checkerboard couplings
        for i in range(4):
            add(c, _checkerboard(shape, (i + 1) % 2, hidden, step))
        return Compose(layers)
    for i in range(3):
        add(c, _checkerboard(shape, (i + 1) % 2, hidden, step))
    layers.append(Squeeze())
    squeezed = (4 * c, h // 2, w // 2)
    for i in range(3):
        add(4 * c, _channel_split(squeezed, i % 2 == 0, hidden, step))
    inner = _scale((2 * c, h // 2, w // 2), scales_left - 1, 2 * hidden, step)
    layers += [FactorOut(inner), Inverse(Squeeze())]
    return Compose(layers)


def _check_sizes(
    shape: tuple[int, ...], scales: int | None, hidden: int, blocks: int, classes: int
) -> int:
    """Refuse sizes the multi-scale recursion cannot take; returns the number of scales."""
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"must be (channels, height, width), got {shape}", "shape")
    _, h, w = shape
    scales = default_scales(h, w) if scales is None else scales
    for name, value, least in [
        ("num_scales", scales, 1),
        ("hidden_channels", hidden, 1),
        ("num_blocks", blocks, 0),
        ("num_classes", classes, 0),
    ]:
        if value < least:
            raise ConfigError(f"must be at least {least}, got {value}", name)
    step = 2 ** (scales - 1)
    if h % step or w % step:
        raise ConfigError(
            f"{scales} scales need height and width divisible by {step}, got {h}x{w}; "
            "pad or crop the images, or use fewer scales",
            "num_scales",
        )
    if h * w // step**2 < 2:
        raise ConfigError(
            f"the last scale would be 1x1; use fewer than {scales} scales", "num_scales"
        )
    return scales


class MultiScaleRealNVP(Flow):
    """Real NVP for images (Dinh et al. 2017, section 3.6): ``log_prob`` of dequantized pixels.

    Input: ``(B, C, H, W)`` float pixels in ``(0, levels)``, integer grey levels plus uniform
    noise (``dequantize``). The latent has the input's shape: the factored-out channels of each
    scale sit where the inverse squeezes put them back.

    Args:
        shape: ``(C, H, W)`` of one image; ``H`` and ``W`` must be divisible by
            ``2 ** (num_scales - 1)``.
        levels: grey levels of the discrete pixels (256 for 8-bit images, 17 for sklearn digits).
        num_scales: scales, the last one included; None: ``default_scales(H, W)``, down to 4x4
            as the paper recurses.
        hidden_channels: width of the first scale's ResNets; doubled at each scale.
        num_blocks: residual blocks per ResNet.
        alpha: the logit preprocessing's margin (0.05 in the paper).
        batch_norm: a ``BatchNorm`` bijection after every coupling.
        scale_init: initial bound of each coupling's log-scale.
        max_scale: cap on each coupling's log-scale, ``|s| <= max_scale`` (see
            ``AffineCoupling``; None: no cap).
        num_classes: K > 0 makes the model class-conditional, ``p(x | y)`` for labels ``y`` in
            ``0..K-1`` (the context: one integer per image). Every conditioner sees the label
            one-hot, as K constant channels.
        class_prior: for a class-conditional model, a learned mean and log-std of the base for
            each class and latent dimension, so each factored-out level gets its own per class
            (Glow's class-conditional prior; ``ConditionalNormal``). False: a standard normal.
        actnorm: an ``ActNorm`` (Glow's activation normalization, initialised from the first
            training batch) before every coupling; with ``batch_norm=False``, Glow's choice, in
            place of the batch-norm bijections (the ResNets keep their own batch norms).
        conv1x1: an ``InvertibleConv1x1`` (Glow's invertible 1x1 convolution, LU form) before
            every coupling of more than one channel: a learned mixing of the channels in place
            of relying on the fixed alternation of the masks alone.
        packed: each conditioner sees only the pixels its coupling keeps, packed as channels,
            and computes parameters only for the others. A checkerboard coupling runs on
            ``squeeze(x)``, where one checkerboard's pixels are two of every four channels
            (``packed_checkerboard_mask``), so its ResNet works on a quarter of the pixels; a
            channel coupling's ResNet sees the kept half of the channels. The same splits of the
            pixels, for a fraction of the convolutions' work (False: the
            paper's full-resolution masked inputs, with a checkerboard's mask as an extra
            channel). A scale of odd height or width keeps masked checkerboards.

    Examples:
        >>> flow = MultiScaleRealNVP((1, 8, 8), levels=17, hidden_channels=8, num_blocks=1)
        >>> x = dequantize(torch.randint(0, 17, (4, 1, 8, 8)))
        >>> flow.log_prob(x).shape, flow.encode(x).shape
        (torch.Size([4]), torch.Size([4, 1, 8, 8]))

        Class-conditional, 64 samples of the digit 3:

        >>> flow = MultiScaleRealNVP((1, 8, 8), 17, hidden_channels=8, num_blocks=1, num_classes=10)
        >>> flow.log_prob(x, torch.tensor([0, 1, 2, 3])).shape, flow.sample(64, 3).shape
        (torch.Size([4]), torch.Size([64, 1, 8, 8]))
    """

    kind = "multiscale"
    #: the paper code's recipe: batch 64, gradient-norm clip 100, L2 5e-5 on the scales and
    #: weight-norm magnitudes
    recipe: ClassVar[TrainConfig] = TrainConfig(batch_size=64, grad_clip=100.0, scale_l2=5e-5)
    nll_units: ClassVar[str] = "nats per image, of dequantized pixels"

    def __init__(
        self,
        shape: tuple[int, int, int] | list[int],
        levels: int = 256,
        num_scales: int | None = None,
        hidden_channels: int = 32,
        num_blocks: int = 2,
        alpha: float = 0.05,
        batch_norm: bool = True,
        scale_init: float = 1.0,
        max_scale: float | None = MAX_SCALE,
        num_classes: int = 0,
        class_prior: bool = True,
        actnorm: bool = False,
        conv1x1: bool = False,
        packed: bool = False,
    ):
        sizes = tuple(int(s) for s in shape)
        num_scales = _check_sizes(sizes, num_scales, hidden_channels, num_blocks, num_classes)
        c, h, w = sizes  # _check_sizes refuses any other length
        event = (c, h, w)
        step = _Step(
            num_blocks, batch_norm, actnorm, conv1x1, packed, scale_init, max_scale, num_classes
        )
        body = _scale(event, num_scales, hidden_channels, step)
        conditional = num_classes > 0
        base = (
            ConditionalNormal(event, num_classes)
            if conditional and class_prior
            else StandardNormal(event)
        )
        context_shape = () if conditional else None
        super().__init__(Compose([Logit(levels, alpha), body]), base, context_shape)
        self.config = {
            "shape": list(event),
            "levels": levels,
            "num_scales": num_scales,
            "hidden_channels": hidden_channels,
            "num_blocks": num_blocks,
            "alpha": alpha,
            "batch_norm": batch_norm,
            "scale_init": scale_init,
            "max_scale": max_scale,
        }
        if conditional:
            self.config.update(num_classes=num_classes, class_prior=class_prior)
        for name, on in [("actnorm", actnorm), ("conv1x1", conv1x1), ("packed", packed)]:
            if on:  # saved only when on, so runs from before these options read the same
                self.config[name] = True

    @classmethod
    def for_data(
        cls, x_train: NDArray | TableSummary, context: NDArray | None = None, **options: Any
    ) -> MultiScaleRealNVP:
        """A model for images ``x_train`` (N, C, H, W) of integer grey levels: the shape from
        the data, ``levels`` (required) and the rest from ``options``. With ``context``, the
        images' integer labels (N,), the model is class-conditional; ``num_classes`` defaults to
        the largest label plus one."""
        if "levels" not in options:
            raise ConfigError("the number of grey levels of the images is required", "levels")
        if context is not None and not options.get("num_classes"):
            options = {**options, "num_classes": int(np.max(context)) + 1}
        return cls(**{**options, "shape": tuple(np.shape(x_train)[1:])})

    @property
    def num_classes(self) -> int:
        """K, the labels of a class-conditional model (0: unconditional)."""
        return self.config.get("num_classes", 0)

    @property
    def context_dtype(self) -> torch.dtype:
        """Labels are integers."""
        return torch.long

    def embed(self, context: Tensor) -> Tensor:
        """Labels (B,) one-hot, (B, K), in the model's dtype."""
        labels = context.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"a label of {int(labels.min()) if int(labels.min()) < 0 else int(labels.max())}"
                f"; the model has labels 0 to {self.num_classes - 1}"
            )
        return nn.functional.one_hot(labels, self.num_classes).to(self.dtype)

    def context_mismatch(self, context: NDArray) -> str | None:
        """Labels that are not integers in ``0..num_classes-1``, named with the first bad one."""
        reason = super().context_mismatch(context)
        if reason is not None or not np.size(context):
            return reason
        values = np.asarray(context)
        bad = (values != np.round(values)) | (values < 0) | (values >= self.num_classes)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            return (
                f"label {values[i]} at row {i + 1}; the model has labels 0 to "
                f"{self.num_classes - 1}"
            )
        return None

    @property
    def levels(self) -> int:
        """Grey levels of the discrete pixels."""
        return self.config["levels"]

    @property
    def dims(self) -> int:
        """Pixels per image, ``C * H * W``: the D of bits per dimension."""
        return math.prod(self.config["shape"])

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float32

    def mismatch(self, x: NDArray, levels: int | None = None) -> str | None:
        """Images of another shape, of another number of grey levels (``levels``, when the
        data say), or with a value beyond the model's levels."""
        shape, top = tuple(np.shape(x)[1:]), int(np.max(x)) if np.size(x) else 0
        expected = f"the model expects shape {self.event_shape} with {self.levels} levels"
        if shape != self.event_shape or (levels is not None and levels != self.levels):
            what = "" if levels is None else f" with {levels} grey levels"
            return f"images of shape {shape}{what}; {expected}"
        if top >= self.levels:
            return f"a grey level of {top}; {expected} (0 to {self.levels - 1})"
        return None

    def prepare(self, x: ArrayLike | Tensor, seed: int = 0) -> Tensor:
        """Integer grey levels, dequantized once with noise drawn from ``seed``."""
        x = self.as_input(x)
        return dequantize(x, torch.Generator(device=x.device).manual_seed(seed))

    def training_batch(self, x: Tensor, step: int, seed: int) -> Tensor:
        """Integer grey levels with fresh noise drawn from ``(seed, step)`` (see
        ``Dequantizer``)."""
        return Dequantizer(seed)(x, step)

    @property
    def metric(self) -> Metric:
        """Bits per dimension (see ``bits_per_dim``)."""
        return Metric("bits_per_dim", "bpd", "bits/dim", lambda nll: bits_per_dim(-nll, self.dims))

    def to_data(self, x: Tensor) -> NDArray[np.uint8]:
        """Continuous outputs as discrete grey levels: floor, clip to ``[0, levels)``; uint8."""
        x = torch.nan_to_num(x.detach().float().cpu(), nan=0.0)
        return x.floor().clamp(0, self.levels - 1).numpy().astype(np.uint8)

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """Bits per dimension of each dequantized image in ``x``: (B, C, H, W) -> (B,)."""
        return bits_per_dim(self.log_prob(x), self.dims)
