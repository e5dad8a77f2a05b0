"""Conditioner networks."""

from __future__ import annotations

from torch import nn

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
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


class MLP(nn.Sequential):
    """A multilayer perceptron ``in -> hidden x num_hidden_layers -> out``.

    The last layer starts at zero (``zero_last=True``), so a coupling layer built on it starts as
    the identity map.

    Example:
        >>> net = MLP(1, 2, hidden_features=64, num_hidden_layers=2)
        >>> [m.out_features for m in net if isinstance(m, nn.Linear)]
        [64, 64, 2]
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 128,
        num_hidden_layers: int = 2,
        activation_name: str = "relu",
        zero_last: bool = True,
    ):
        if min(in_features, out_features, hidden_features) < 1 or num_hidden_layers < 0:
            raise ValueError(
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
