"""Conditioner networks."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realnvp import collectives
from realnvp.errors import ConfigError

#: the conditioners' default nonlinearity
ACTIVATION = "relu"
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (one of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown {name!r}; choose one of {', '.join(ACTIVATIONS)}", "activation"
        ) from None


class MLP(nn.Sequential):
    """A multilayer perceptron ``in -> hidden x num_hidden_layers -> out``. Its sizes have no
    defaults here: the models that build it hold them (``RealNVP``).

    The last layer starts at zero (``zero_last=True``), so a coupling layer built on it starts as
    the identity map.

    ``compute_dtype=torch.bfloat16`` runs every layer after the first under autocast (mixed
    precision: bf16 matrix multiplies, float32 weights) and returns the input's dtype. The first
    layer reads the data in full precision: rounding the data itself to bf16 would turn the
    float32 rounding error of an inverse pass into a whole bf16 step of every hidden unit.

    Examples:
        >>> net = MLP(1, 2, hidden_features=64, num_hidden_layers=2)
        >>> [m.out_features for m in net if isinstance(m, nn.Linear)]
        [64, 64, 2]
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int,
        num_hidden_layers: int,
        activation_name: str = ACTIVATION,
        zero_last: bool = True,
        compute_dtype: torch.dtype | None = None,
    ):
        if min(in_features, out_features, hidden_features) < 1 or num_hidden_layers < 0:
            raise ConfigError(
                f"invalid MLP sizes: in={in_features}, out={out_features}, "
                f"hidden={hidden_features}, num_hidden_layers={num_hidden_layers}"
            )
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden_features), activation(activation_name)]
            width = hidden_features
        last = nn.Linear(width, out_features)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        super().__init__(*layers, last)
        self.compute_dtype = compute_dtype

    def forward(self, x: Tensor) -> Tensor:
        if self.compute_dtype is None:
            return super().forward(x)
        h = self[0](x)
        with torch.autocast(x.device.type, dtype=self.compute_dtype):
            for layer in list(self)[1:]:
                h = layer(h)
        return h.to(x.dtype)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode moments are those of the global batch when the
    model trains on several processes (torchrun), on CPU (gloo) as on GPU (nccl): N processes
    then compute what one process computes on the whole batch. On one process it is
    ``nn.BatchNorm2d`` itself (same parameters, buffers and state_dict keys)."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and collectives.is_distributed()):
            return super().forward(x)
        # Moments in at least float32 (bf16 under autocast), returned in the input's dtype, as
        # nn.BatchNorm2d does.
        dtype, x = x.dtype, x.to(torch.promote_types(x.dtype, torch.float32))
        mean, var, count = collectives.all_reduce_moments(x, [0, 2, 3])
        # The buffers are None under track_running_stats=False, which this class does not handle.
        assert self.num_batches_tracked is not None
        assert self.running_mean is not None and self.running_var is not None
        with torch.no_grad():  # running averages as nn.BatchNorm2d keeps them (unbiased var)
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1 / int(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach(), m)
            self.running_var.lerp_(var.detach() * count / (count - 1), m)
        shape = (1, -1, 1, 1)
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        return (y * self.weight.reshape(shape) + self.bias.reshape(shape)).to(dtype)


#: the memory layout the ResNet conditioners convolve in. Channels-last (NHWC) is the layout
#: oneDNN's and cuDNN's fast convolution kernels take; on this project's 2-core CPU it trains
#: the packed multi-scale model on mnist5k 1.47 times as fast as NCHW, in one thread
#: (``benchmarks/images_vs_normflows.py --memory-format``). Both layouts compute the same
#: function; their kernels round differently.
CONV_MEMORY_FORMAT = torch.channels_last


class _WeightNormParameters(nn.Module):
    """A weight norm's magnitudes ``g`` and directions ``v``, named as the parametrization names
    them."""

    def __init__(self, g: Tensor, v: Tensor):
        super().__init__()
        self.original0 = nn.Parameter(g)
        self.original1 = nn.Parameter(v)


class WeightNormConv2d(nn.Module):
    """A weight-normalized convolution (Salimans and Kingma 2016), as in the paper's ResNets:
    ``w = g v / ||v||``, one magnitude ``g`` per output channel, same padding.

    Its parameters are initialised and named as ``torch.nn.utils.parametrizations.weight_norm``
    on an ``nn.Conv2d`` names them (``bias``, ``parametrizations.weight.original0`` = g,
    ``.original1`` = v, in that order) and ``w`` is computed by the same kernel, so runs saved
    with that parametrization load and give the same figures. It is a plain module: the
    parametrization makes each convolution an instance of its own generated class, which cost
    Python time on every call and kept ``torch.compile`` from sharing one graph between ResNets.

    Examples:
        >>> conv = WeightNormConv2d(2, 4)
        >>> conv(torch.randn(1, 2, 5, 5)).shape
        torch.Size([1, 4, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, kernel_size)  # torch's initialisation
        self.padding = kernel_size // 2
        assert conv.bias is not None
        self.bias = nn.Parameter(conv.bias.detach())
        v = conv.weight.detach()
        g = torch.norm_except_dim(v, 2, 0)
        self.parametrizations = nn.ModuleDict({"weight": _WeightNormParameters(g, v)})

    @property
    def magnitude(self) -> nn.Parameter:
        """The magnitudes ``g``, shape (out, 1, 1, 1)."""
        return cast(_WeightNormParameters, self.parametrizations["weight"]).original0

    @property
    def weight(self) -> Tensor:
        """The convolution's weight, ``g v / ||v||``."""
        w = cast(_WeightNormParameters, self.parametrizations["weight"])
        return torch._weight_norm(w.original1, w.original0, 0)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=self.padding)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            BatchNorm2d(channels),
            nn.ReLU(),
            WeightNormConv2d(channels, channels),
            BatchNorm2d(channels),
            nn.ReLU(),
            WeightNormConv2d(channels, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class ResNet(nn.Module):
    """The paper's convolutional conditioner: a ResNet of weight-normalized 3x3 convolutions with
    batch norm and ReLU, ``(B, in, H, W) -> (B, out, H, W)``.

    The last convolution's weight-norm magnitudes and bias start at zero, so a coupling layer
    built on it starts as the identity, while its directions are random so the magnitudes get a
    gradient from the first step.

    Examples:
        >>> net = ResNet(2, 4, hidden_channels=8, num_blocks=1)
        >>> net(torch.randn(3, 2, 5, 5)).abs().max().item()
        0.0
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, num_blocks: int):
        super().__init__()
        if min(in_channels, out_channels, hidden_channels) < 1 or num_blocks < 0:
            raise ConfigError(
                f"invalid ResNet sizes: in={in_channels}, out={out_channels}, "
                f"hidden={hidden_channels}, num_blocks={num_blocks}"
            )
        self.first = WeightNormConv2d(in_channels, hidden_channels)
        self.blocks = nn.Sequential(*[_ResidualBlock(hidden_channels) for _ in range(num_blocks)])
        self.out_norm = BatchNorm2d(hidden_channels)
        self.last = WeightNormConv2d(hidden_channels, out_channels)
        with torch.no_grad():
            self.last.magnitude.zero_()
            self.last.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.first(x.contiguous(memory_format=CONV_MEMORY_FORMAT)))
        return self.last(torch.relu(self.out_norm(h))).contiguous()

    def l2_terms(self) -> list[Tensor]:
        """What the paper code's L2 penalizes here: every weight-norm magnitude."""
        return weight_norm_magnitudes(self)


def weight_norm_magnitudes(module: nn.Module) -> list[Tensor]:
    """The magnitude parameters ``g`` of every weight-normalized layer inside ``module``."""
    return [m.magnitude for m in module.modules() if isinstance(m, WeightNormConv2d)]
