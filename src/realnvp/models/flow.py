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
  dimension, or None.

Training, the estimator and the studies use only this interface, so they never ask which kind they
hold; the CLI asks one thing more, the shape of an example (``event_shape``), to pick its file
formats (CSV rows or images). The base class gives the plain answers (no preprocessing, no
metric), so any ``Flow(bijection, base)`` a user composes trains (``fit``, ``Trainer``) and
scores through the same path; a run folder's model is rebuilt by ``build_flow``, which knows the
kinds in ``realnvp.models.KINDS``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from realnvp.bijections import Bijection
from realnvp.config import TrainConfig
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
    """

    #: the model's ``type`` in a checkpoint's config (see ``realnvp.models.build_flow``)
    kind: ClassVar[str] = ""
    #: the default training recipe of this kind of model
    recipe: ClassVar[TrainConfig] = TrainConfig()
    #: what the NLL is measured in, for reports
    nll_units: ClassVar[str] = "nats per example"

    def __init__(self, transform: Bijection, base: StandardNormal):
        super().__init__()
        self.transform = transform
        self.base = base
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
    def for_data(cls, x_train: NDArray, **options: Any) -> Flow:
        """A new model for training data ``x_train`` (N, ...), its sizes and any statistics taken
        from the data; ``options`` are the constructor's other arguments."""
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
    def forward(self, x: Tensor) -> Tensor:
        return self.log_prob(x)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of each row of ``x``: (B, *event) -> (B,).

        It runs in the flow's mode: in training mode a batch-norm bijection uses the batch's
        moments, as the paper trains; ``eval()`` (or ``realnvp.training.evaluate_nll``) scores
        each row on its own.
        """
        z, log_det = self.transform(x)
        return self.base.log_prob(z) + log_det

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

    def encode(self, x: Tensor) -> Tensor:
        """Latent inference, ``z = f(x)``, in evaluation mode whatever the flow's mode."""
        with self.evaluating():
            return self.transform(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Generation from a latent, ``x = f^-1(z)``, in evaluation mode whatever the flow's
        mode."""
        with self.evaluating():
            return self._decode(z)

    def _decode(self, z: Tensor) -> Tensor:
        return self.transform.inverse(z)[0]

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` samples ``x = f^-1(z)``, ``z ~ N(0, temperature^2 I)``, on the model's device;
        in evaluation mode, so each sample is independent of the others and nothing changes."""
        if temperature <= 0:
            raise ConfigError(f"must be positive, got {temperature}", "temperature")
        with self.evaluating():
            return self._decode(self.base.sample(n, temperature, generator))

    def sample_and_log_prob(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` samples and their log-densities from one inverse pass, in evaluation mode:
        ``log p(x) = log p_Z(z) - log|det df^-1/dz|``."""
        with self.evaluating():
            z = self.base.sample(n, generator=generator)
            x, log_det = self.transform.inverse(z)
            return x, self.base.log_prob(z) - log_det

    def compile(self, **kwargs: Any) -> Flow:
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
