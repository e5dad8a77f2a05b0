"""The flow, and the interface every kind of model shares.

A *kind* of model (vectors, images, and next conditional ones) is a ``Flow`` subclass that knows,
besides its density:

- how to build itself: ``for_data(x_train, **options)`` from training data, ``from_config`` from
  a checkpoint's ``config``, ``defaults()`` its constructor's defaults;
- how training runs for it: its default ``recipe`` (a ``TrainConfig``);
- how data enter it: ``as_input`` (the tensor it takes), ``prepare`` (the fixed version of a set
  of examples that is scored, e.g. dequantized once with a seed), ``training_batch`` (what each
  training batch becomes at a step, e.g. dequantized with fresh noise);
- what it reports: the NLL in ``nll_units``, and beside it a ``metric`` such as bits per
  dimension, or None;
- for a conditional flow ``p(x | c)``, what a context is: ``context_shape`` (``(C,)`` for a
  vector, ``()`` for a class label), how it becomes a tensor (``as_context``) and what the
  conditioners see of it (``embed``).

Training, the estimator and the studies use only this interface, so they never ask which kind they
hold; the CLI asks one thing more, the shape of an example (``event_shape``), to pick its file
formats (CSV rows or images). The base class gives the plain answers (no preprocessing, no
metric), so any ``Flow(bijection, base)`` a user composes trains (``fit``, ``Trainer``) and
scores through the same path; a run folder's model is rebuilt by ``build_flow``, which knows the
kinds in ``realnvp.models.KINDS``.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from realnvp.bijections import Bijection
from realnvp.bijections.base import forward, inverse
from realnvp.config import TrainConfig
from realnvp.data.store import TableSummary
from realnvp.distributions import StandardNormal
from realnvp.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """A figure a kind reports beside its NLL in nats, e.g. bits per dimension for images.

    ``name`` is its key in JSON results, ``short`` its name in ``metrics.csv``, TensorBoard and
    the progress bar, ``unit`` what follows the number, ``of_nll`` the figure from a mean NLL."""

    name: str
    short: str
    unit: str
    of_nll: Callable[[float], float]


class Flow(nn.Module):
    """A normalizing flow: ``z = f(x)`` with ``z`` distributed as ``base``.

    ``log p(x) = log p_Z(f(x)) + log|det df/dx|`` (the change of variables, eq. 3 of the paper).
    Calling the flow returns ``log_prob``, so a training step is ``loss = -flow(x).mean()``.

    A conditional flow, ``p(x | c) = p_Z(f(x; c) | c) |det df/dx|``, takes a ``context`` in each
    operation: one per example, ``(B, *context_shape)``, or one for all, ``context_shape``. Its
    embedding (``embed``: e.g. standardized, then ``context_net``) goes to every bijection and
    to the base, so each context value gives an exact flow of its own. ``context_shape`` is None
    for an unconditional flow, which takes no context.
    """

    #: the model's ``type`` in a checkpoint's config (see ``realnvp.models.build_flow``)
    kind: ClassVar[str] = ""
    #: the default training recipe of this kind of model
    recipe: ClassVar[TrainConfig] = TrainConfig()
    #: what the NLL is measured in, for reports
    nll_units: ClassVar[str] = "nats per example"

    def __init__(
        self,
        transform: Bijection,
        base: StandardNormal,
        context_shape: tuple[int, ...] | None = None,
        context_net: nn.Module | None = None,
    ):
        super().__init__()
        self.transform = transform
        self.base = base
        #: the shape of one context value, or None for an unconditional flow
        self.context_shape = None if context_shape is None else tuple(context_shape)
        #: what the context passes through before the bijections see it (None: as it is)
        self.context_net = context_net
        #: the constructor's arguments, JSON-friendly: ``type(flow)(**flow.config)`` rebuilds it
        self.config: dict[str, Any] = {}

    @property
    def spec(self) -> dict[str, Any]:
        """What a checkpoint records to rebuild the model: its ``type`` (the kind) and
        ``config``; ``realnvp.models.build_flow(flow.spec)`` is a new flow of the same shape."""
        return {"type": self.kind, **self.config}

    # -- building --------------------------------------------------------------------------
    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The constructor's default arguments, by name: the one place they are written."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}

    @classmethod
    def defaults_for(cls, shape: tuple[int, ...]) -> dict[str, Any]:
        """The constructor's arguments that depend on the training data's ``shape`` (N, ...),
        by name; ``for_data`` uses them where its ``options`` say nothing. None here: the
        constructor's defaults hold for any data."""
        return {}

    @classmethod
    def recipe_for(cls, shape: tuple[int, ...]) -> TrainConfig:
        """The training recipe for training data of ``shape`` (N, ...): ``recipe`` here; a kind
        whose best recipe depends on the data's size overrides this (``RealNVP``)."""
        return cls.recipe

    @classmethod
    def for_data(
        cls, x_train: NDArray | TableSummary, context: NDArray | None = None, **options: Any
    ) -> Flow:
        """A new model for training data ``x_train`` (N, ...) and, for a conditional model, their
        ``context`` (N, ...), its sizes and any statistics taken from the data; ``options`` are
        the constructor's other arguments. A table kind may also take a ``TableSummary`` of
        rows that are not in memory."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from data")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Flow:
        """The model ``config`` describes (``flow.config``, or ``flow.spec`` with its type);
        weights not loaded."""
        return cls(**{k: v for k, v in config.items() if k != "type"})

    # -- data in ---------------------------------------------------------------------------
    @property
    def event_shape(self) -> tuple[int, ...]:
        """The shape of one example: ``(D,)`` for vectors, ``(C, H, W)`` for images."""
        return self.base.event_shape

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype ``as_input`` gives the data: the model's own, unless the kind standardizes
        in float64 first."""
        return self.dtype

    def as_input(self, x: ArrayLike | Tensor) -> Tensor:
        """Examples as the tensor the model takes: on its device, in ``input_dtype``."""
        x = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
        return x.to(self.device, self.input_dtype)

    def prepare(self, x: ArrayLike | Tensor, seed: int = 0) -> Tensor:
        """Examples to score, as a fixed tensor: any noise a kind adds (image dequantization) is
        drawn once, from ``seed``. The plain flow takes them as they are."""
        return self.as_input(x)

    def training_batch(self, x: Tensor, step: int, seed: int) -> Tensor:
        """A training batch as the model trains on it at ``step``: the plain flow takes it as it
        is; an image model adds fresh dequantization noise drawn from ``(seed, step)``."""
        return x

    def mismatch(self, x: NDArray, levels: int | None = None) -> str | None:
        """Why the examples ``x`` (N, ...) cannot be the model's input, or None if they can;
        ``levels``: how many discrete values the data come with, when they are discrete."""
        shape = tuple(np.shape(x)[1:])
        if shape != self.event_shape:
            return f"examples of shape {shape}; the model expects {self.event_shape}"
        return None

    @property
    def context_dtype(self) -> torch.dtype:
        """The dtype ``as_context`` gives a context: the model's own unless a kind says (float64
        for a standardized table, integer labels for images)."""
        return self.dtype

    def as_context(self, context: ArrayLike | Tensor) -> Tensor:
        """A context as the tensor the model takes: on its device, in ``context_dtype``."""
        if not isinstance(context, Tensor):
            context = torch.as_tensor(np.asarray(context))
        return context.to(self.device, self.context_dtype)

    def context_mismatch(self, context: NDArray) -> str | None:
        """Why ``context`` (N, *context_shape) cannot be this flow's context, or None if it can."""
        if self.context_shape is None:
            return "the model is not conditional; it takes no context"
        shape = tuple(np.shape(context)[1:])
        if shape != self.context_shape:
            return f"contexts of shape {shape}; the model expects {self.context_shape}"
        return None

    def embed(self, context: Tensor) -> Tensor:
        """What the bijections and the base see of a context (B, *context_shape): (B, E), the
        context in the model's dtype through ``context_net``."""
        h = context.to(self.dtype).reshape(context.shape[0], -1)
        return h if self.context_net is None else self.context_net(h)

    def _context(self, context: ArrayLike | Tensor | None, batch: int) -> Tensor | None:
        """The embedded context of a batch of ``batch`` examples: one context per example, or
        one for all of them."""
        if self.context_shape is None:
            if context is not None:
                raise ValueError("this flow is not conditional; it takes no context")
            return None
        shape = self.context_shape
        if context is None:
            raise ValueError(
                f"this flow is conditional: give a context of shape {shape} or "
                f"({batch}, {', '.join(map(str, shape))})"
            )
        context = self.as_context(context)
        if context.shape == shape:
            context = context.expand(batch, *shape)
        elif context.shape != (batch, *shape):
            raise ValueError(
                f"context of shape {tuple(context.shape)} for {batch} examples; expected "
                f"{shape} or ({batch}, {', '.join(map(str, shape))})"
            )
        return self.embed(context)

    def _sample_context(
        self, n: int, context: ArrayLike | Tensor | None
    ) -> tuple[Tensor | None, tuple[int, ...]]:
        """The embedded context of ``n`` draws per context, and the contexts' batch shape:
        ``()`` for one context, ``(B,)`` for B of them (draw ``i`` of context ``b`` is row
        ``i * B + b``)."""
        if self.context_shape is None or context is None:
            return self._context(context, n), ()
        shape = self.context_shape
        context = self.as_context(context)
        batch = tuple(context.shape[: context.dim() - len(shape)])
        if tuple(context.shape[len(batch) :]) != shape or len(batch) > 1:
            raise ValueError(
                f"context of shape {tuple(context.shape)}; expected {shape} or (B, "
                f"{', '.join(map(str, shape))})"
            )
        rows = context.reshape(-1, *shape).repeat(n, *[1] * len(shape))
        return self.embed(rows), batch

    def in_range(self, x: Tensor) -> Tensor:
        """Which values of ``x`` the model can take without overflowing its dtype (same shape as
        ``x``)."""
        return x.to(torch.float64).abs() <= torch.finfo(self.dtype).max

    # -- what it reports -------------------------------------------------------------------
    @property
    def metric(self) -> Metric | None:
        """The figure reported beside the NLL (bits per dimension for images), or None."""
        return None

    def to_data(self, x: Tensor) -> NDArray:
        """Model outputs (samples, decoded latents) in the data's own form, as numpy."""
        return x.detach().double().cpu().numpy()

    # -- the density -----------------------------------------------------------------------
    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        # without a context, log_prob(x) as before contexts existed (a user's override of it)
        return self.log_prob(x) if context is None else self.log_prob(x, context)

    def log_prob(self, x: Tensor, context: ArrayLike | Tensor | None = None) -> Tensor:
        """Exact log-density of each row of ``x``: (B, *event) -> (B,); for a conditional flow,
        ``log p(x | context)`` with one context per row, ``(B, *context_shape)``, or one for all.

        It runs in the flow's mode: in training mode a batch-norm bijection uses the batch's
        moments, as the paper trains; ``eval()`` (or ``realnvp.training.evaluate_nll``) scores
        each row on its own.
        """
        h = self._context(context, x.shape[0])
        z, log_det = forward(self.transform, x, h)
        return self.base.log_prob(z, h) + log_det

    @property
    def device(self) -> torch.device:
        """The device of the model's tensors (where samples are drawn)."""
        return self.base.log_norm.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype the model computes in."""
        return self.base.log_norm.dtype

    @contextmanager
    def evaluating(self) -> Iterator[Flow]:
        """Evaluation mode for the duration of a ``with`` block, then every submodule's own mode
        back: generation and inference must not use batch statistics (a sample would depend on
        the rest of its batch, and ``decode(encode(x))`` would miss ``x``) or update running
        averages."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            yield self
        finally:
            for m, mode in modes:
                m.training = mode

    def encode(self, x: Tensor, context: ArrayLike | Tensor | None = None) -> Tensor:
        """Latent inference, ``z = f(x)`` (``f(x; context)``), in evaluation mode whatever the
        flow's mode."""
        with self.evaluating():
            return forward(self.transform, x, self._context(context, x.shape[0]))[0]

    def decode(self, z: Tensor, context: ArrayLike | Tensor | None = None) -> Tensor:
        """Generation from a latent, ``x = f^-1(z)`` (``f^-1(z; context)``), in evaluation mode
        whatever the flow's mode."""
        with self.evaluating():
            return self._decode(z, self._context(context, z.shape[0]))

    def _decode(self, z: Tensor, h: Tensor | None = None) -> Tensor:
        return inverse(self.transform, z, h)[0]

    def sample(
        self,
        n: int,
        context: ArrayLike | Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` samples ``x = f^-1(z)``, ``z`` drawn from the base at ``temperature`` (``z ~
        N(0, temperature^2 I)``), on the model's device; in evaluation mode, so each sample is
        independent of the others and nothing changes.

        Shapes follow ``torch.distributions``: ``(n, *event)`` from an unconditional flow or one
        context ``(*context_shape)``; ``(n, B, *event)`` from B contexts ``(B,
        *context_shape)``, ``n`` samples of each. (An unconditional flow still reads a number in
        the place of ``context`` as the temperature, as before contexts existed; pass
        ``temperature=`` by keyword.)
        """
        if self.context_shape is None and isinstance(context, int | float):
            warnings.warn(
                "sample(n, temperature) is deprecated: pass temperature= by keyword",
                FutureWarning,
                stacklevel=2,
            )
            context, temperature = None, float(context)
        if temperature <= 0:
            raise ConfigError(f"must be positive, got {temperature}", "temperature")
        with self.evaluating():
            h, batch = self._sample_context(n, context)
            z = self.base.sample(n * math.prod(batch), temperature, generator, h)
            x = self._decode(z, h)
            return x.reshape(n, *batch, *x.shape[1:])

    def sample_and_log_prob(
        self,
        n: int,
        context: ArrayLike | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``n`` samples and their log-densities from one inverse pass, in evaluation mode:
        ``log p(x) = log p_Z(z) - log|det df^-1/dz|``. Shapes as ``sample``: ``(n, *batch,
        *event)`` and ``(n, *batch)``."""
        with self.evaluating():
            h, batch = self._sample_context(n, context)
            z = self.base.sample(n * math.prod(batch), generator=generator, context=h)
            x, log_det = inverse(self.transform, z, h)
            log_p = self.base.log_prob(z, h) - log_det
            return x.reshape(n, *batch, *x.shape[1:]), log_p.reshape(n, *batch)

    # unlike nn.Module.compile (which compiles __call__ and returns None): returns the flow
    def compile(self, **kwargs: Any) -> Flow:  # type: ignore[override]
        """Compile ``log_prob`` (so training and scoring) and the inverse pass (so ``decode`` and
        ``sample``) with ``torch.compile``; ``kwargs`` go to it. Returns the flow itself.

        Each new batch shape compiles first (tens of seconds on a CPU, which needs a C++
        compiler); afterwards the fused kernels run faster than eager PyTorch (see README's
        Performance section). Weights, checkpoints and results are unchanged.
        """
        self.log_prob = torch.compile(self.log_prob, **kwargs)  # type: ignore[method-assign]
        self._decode = torch.compile(self._decode, **kwargs)  # type: ignore[method-assign]
        return self

    def regularization(self) -> Tensor:
        """The sum of squares of every submodule's ``l2_terms()`` (the paper code's L2: each
        affine coupling's log-scale bound and each weight-norm magnitude of the ResNets), which
        ``TrainConfig.scale_l2`` weighs into the loss."""
        terms = [t for m in self.modules() if m is not self for t in _l2_terms(m)]
        zero = torch.zeros((), device=self.device)
        return sum((t.square().sum() for t in terms), zero)


def _l2_terms(module: nn.Module) -> list[Tensor]:
    terms = getattr(module, "l2_terms", None)
    return terms() if callable(terms) else []
