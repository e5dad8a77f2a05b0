"""The bijection interface and its composition.

Every bijection maps data to latent in ``forward`` (the paper's f) and back in ``inverse``
(f^-1); both return the transformed tensor and ``log|det J|`` of the map they applied, one value
per batch element. Both take an optional ``context``: a conditional flow's embedded context, one
row per batch element, that coupling layers hand to their conditioners (so each context value
gives its own bijection) and that every other layer ignores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from torch import Tensor, nn


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def forward(b: nn.Module, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``b(x, context)``, or ``b(x)`` without a context, so a bijection written before contexts
    existed (``forward(self, x)``) still works in an unconditional flow."""
    return b(x) if context is None else b(x, context)


def inverse(b: nn.Module, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``b.inverse(z, context)``, or ``b.inverse(z)`` without a context (see ``forward``)."""
    # a method of any bijection, which nn.Module's typing sees as an attribute
    b_inverse = cast("Callable[..., tuple[Tensor, Tensor]]", b.inverse)
    return b_inverse(z) if context is None else b_inverse(z, context)


class Bijection(nn.Module):
    """An invertible map with a tractable Jacobian determinant.

    Subclasses implement both directions side by side:

    - ``forward(x, context=None) -> (z, log_det)`` with ``log_det = log|det dz/dx|``, shape
      ``(batch,)``;
    - ``inverse(z, context=None) -> (x, log_det)`` with ``log_det = log|det dx/dz|``, shape
      ``(batch,)``.

    So ``forward(x)[1] == -inverse(forward(x)[0])[1]`` up to rounding, for each ``context``: the
    context is not transformed, it selects which bijection of ``x`` applies.
    """

    def forward(  # pragma: no cover - abstract
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(  # pragma: no cover - abstract
        self, z: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class Inverse(Bijection):
    """Swap the two directions of a bijection: ``Inverse(b).forward == b.inverse``."""

    def __init__(self, bijection: Bijection):
        super().__init__()
        self.bijection = bijection

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return inverse(self.bijection, x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return forward(self.bijection, z, context)


class Compose(Bijection):
    """Bijections applied in order: forward runs them first to last, inverse last to first.

    The log-determinants add, by the chain rule.

    Examples:
        >>> import torch
        >>> from realnvp.bijections import Compose, Permutation
        >>> f = Compose([Permutation(torch.tensor([1, 0])), Permutation(torch.tensor([1, 0]))])
        >>> z, log_det = f(torch.tensor([[1.0, 2.0]]))
        >>> z.tolist(), log_det.tolist()
        ([[1.0, 2.0]], [0.0])
    """

    def __init__(self, bijections: Iterable[Bijection]):
        super().__init__()
        self.layers = nn.ModuleList(bijections)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Bijection:
        return cast(Bijection, self.layers[index])  # the constructor's bijections

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_det = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = forward(layer, x, context)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_det = z.new_zeros(z.shape[0])
        for layer in reversed(self.layers):
            z, ld = inverse(layer, z, context)
            log_det = log_det + ld
        return z, log_det

    def trajectory(self, x: Tensor, context: Tensor | None = None) -> list[Tensor]:
        """Every intermediate of the forward pass: ``[x, f_1(x), f_2(f_1(x)), ..., z]``."""
        out = [x]
        for layer in self.layers:
            x, _ = forward(layer, x, context)
            out.append(x)
        return out

    def inverse_trajectory(self, z: Tensor, context: Tensor | None = None) -> list[Tensor]:
        """Every intermediate of the inverse pass: ``[z, f_K^-1(z), ..., x]``."""
        out = [z]
        for layer in reversed(self.layers):
            z, _ = inverse(layer, z, context)
            out.append(z)
        return out
