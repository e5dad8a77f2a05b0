"""Real NVP for vectors: the table kind of model."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, ClassVar, cast

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from realnvp.bijections import (
    AdditiveCoupling,
    AffineCoupling,
    Bijection,
    Compose,
    ContextAffine,
    SplineCoupling,
    Standardize,
    alternating_masks,
    half_mask,
    rolling_masks,
)
from realnvp.bijections.coupling import MAX_SCALE, SCALE_INIT, Conditioner
from realnvp.bijections.masks import validate_mask
from realnvp.config import TrainConfig
from realnvp.data.rounding import rounding_steps
from realnvp.data.store import TableSummary
from realnvp.distributions import StandardNormal
from realnvp.errors import ConfigError
from realnvp.models.flow import Flow
from realnvp.models.multiscale import Dequantizer
from realnvp.nn import ACTIVATION, MLP


def _dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in ("bfloat16", "float16"):
        raise ConfigError(
            f"must be 'bfloat16', 'float16' or None, got {value!r}", "conditioner_dtype"
        )
    return getattr(torch, value)


class RealNVP(Flow):
    """Real NVP for vectors: ``num_layers`` couplings with alternating masks over a standard normal.

    Each coupling has its own MLP conditioner that yields the log-scale and the shift together.

    Args:
        features: dimension D of the data (at least 2).
        num_layers: number of coupling layers.
        hidden_features: width of each conditioner's hidden layers.
        num_hidden_layers: depth of each conditioner.
        activation: the conditioners' nonlinearity (see ``realnvp.nn.ACTIVATIONS``).
        coupling: ``"affine"`` (Real NVP), ``"additive"`` (NICE) or ``"spline"`` (monotonic
            rational-quadratic splines, Durkan et al. 2019; see ``SplineCoupling``).
        mask: the first layer's mask (True = passed through); later layers alternate it with its
            complement. Default: pass the first ``ceil(D/2)`` features through.
        masks: ``"alternate"``: ``mask``, its complement, ``mask``, ...; ``"rolling"``: the
            same pair rolled by one feature every two layers, so that every two features
            condition on each other somewhere (see ``rolling_masks``).
        standardize: put a fixed ``Standardize`` first, set from data by
            ``set_standardization``, so the flow trains on standardized values and ``log_prob``
            is a density in the data's own units.
        scale_init: initial bound of each affine coupling's log-scale.
        max_scale: cap on each affine coupling's log-scale, ``|s| <= max_scale`` (see
            ``AffineCoupling``; None: no cap).
        conditioner_dtype: ``"bfloat16"`` runs the conditioners' hidden and output layers in
            mixed precision (bf16 matrix multiplies; the coupling arithmetic and log-det stay in
            the model's dtype): faster on CPUs with AVX-512 BF16 and on GPUs. Each coupling is
            still exactly invertible and its log-det exact; see ``MLP`` for the round trip.
        context_features: C, the size of a context ``c`` for a conditional flow ``p(x | c)``
            (0: unconditional). Every conditioner sees the kept features and the embedded
            context; ``log_prob(x, c)``, ``sample(n, c)``, ``encode(x, c)``, ``decode(z, c)``.
            With ``standardize``, the context is standardized too (``set_standardization``).
        context_net: the embedding of the (standardized) context, any module from (B, C) to
            (B, E), shared by all layers and trained with them (None: the context as it is). Its
            output size E is found by running it once on zeros. A custom net is not part of the
            saved config: rebuild the flow with it in Python, then load the weights.
        bins: K, the bins of each spline coupling's splines (``coupling="spline"`` only).
        tail_bound: B, each spline covers ``[-B, B]`` and is the identity beyond
            (``coupling="spline"`` only; the standardized data mostly lie inside).
        context_affine: put a ``ContextAffine`` after the standardization: every feature
            shifted and scaled by amounts its own MLP computes from the (embedded) context,
            so that the couplings after it see each conditional distribution near where they
            work (splines cover only ``[-B, B]``). Needs a context.
        dequantize: each column's rounding step (0: continuous; None: no column rounded):
            training batches get fresh uniform noise over each step (``training_batch``), rows
            to score a fixed draw of it (``prepare``); see ``realnvp.data.rounding``.

    Examples:
        >>> flow = RealNVP(features=2, num_layers=8, hidden_features=128, num_hidden_layers=2)
        >>> x = flow.sample(4)
        >>> flow.log_prob(x).shape, torch.allclose(flow.decode(flow.encode(x)), x)
        (torch.Size([4]), True)

        A conditional flow, ``p(x | c)`` with x in 2-D and c in 3-D:

        >>> flow = RealNVP(features=2, num_layers=4, context_features=3)
        >>> c = torch.randn(5, 3)
        >>> flow.log_prob(torch.randn(5, 2), c).shape, flow.sample(10, c).shape
        (torch.Size([5]), torch.Size([10, 5, 2]))
    """

    kind = "realnvp"
    nll_units: ClassVar[str] = "nats per row, in the data's own units"

    transform: Compose  # the constructor's layers

    def __init__(
        self,
        features: int,
        num_layers: int = 8,
        hidden_features: int = 128,
        num_hidden_layers: int = 2,
        activation: str = ACTIVATION,
        coupling: str = "affine",
        mask: Tensor | list[bool] | None = None,
        standardize: bool = False,
        scale_init: float = SCALE_INIT,
        conditioner_dtype: str | torch.dtype | None = None,
        max_scale: float | None = MAX_SCALE,
        context_features: int = 0,
        context_net: nn.Module | None = None,
        bins: int = 8,
        tail_bound: float = 5.0,
        dequantize: list[float] | None = None,
        masks: str = "alternate",
        context_affine: bool = False,
    ):
        _check_arguments(features, num_layers, coupling, masks, context_affine, context_features)
        embedded = _embedding_features(context_features, context_net)
        dtype = _dtype(conditioner_dtype)
        first = _first_mask(mask, features)

        conditioner = _mlps(hidden_features, num_hidden_layers, activation, dtype)
        layers: list[Bijection] = []
        if standardize:
            layers.append(Standardize.identity(features))
        if context_affine:
            layers.append(ContextAffine(features, conditioner, embedded, scale_init, max_scale))
        options = {"affine": (scale_init, max_scale), "spline": (bins, tail_bound)}
        schedule = rolling_masks if masks == "rolling" else alternating_masks
        for m in schedule(first, num_layers):
            layers.append(_coupling(m, conditioner, coupling, options.get(coupling, ()), embedded))
        context_shape = (context_features,) if context_features else None
        super().__init__(Compose(layers), StandardNormal(features), context_shape, context_net)
        c = context_features
        self.context_standardize = Standardize.identity(c) if standardize and c else None
        self.config = {
            "features": features,
            "num_layers": num_layers,
            "hidden_features": hidden_features,
            "num_hidden_layers": num_hidden_layers,
            "activation": activation,
            "coupling": coupling,
            "mask": first.tolist(),
            "standardize": standardize,
            "scale_init": scale_init,
            "conditioner_dtype": None if dtype is None else str(dtype).removeprefix("torch."),
            "max_scale": max_scale,
        }
        #: each column's rounding step (0: continuous), or None when no column is rounded
        self.rounding = _rounding(dequantize, features)
        extra: dict[str, Any]  # values of several types
        extra = {"bins": bins, "tail_bound": tail_bound} if coupling == "spline" else {}
        extra |= {"masks": masks} if masks != "alternate" else {}
        extra |= {"context_affine": True} if context_affine else {}
        self.config |= _optional_config(c, context_net, extra, self.rounding)

    @classmethod
    def for_data(
        cls, x_train: NDArray | TableSummary, context: NDArray | None = None, **options: Any
    ) -> RealNVP:
        """A RealNVP for the rows of ``x_train`` (N, D) that standardizes them with their mean
        and std (a constant column gets std 1), so it trains on standardized values and reports
        densities in the data's own units. With ``context`` (N, C), the rows' contexts, the flow
        is conditional, ``p(x | c)``, and standardizes the contexts the same way.

        The statistics are computed in float64 and kept so (see ``Standardize``); the flow takes
        float64 data (``as_input``, ``as_context``), so columns with large offsets keep their
        digits.

        Options the call leaves out take the defaults for data of ``x_train``'s size
        (``defaults_for``), conditional or not. ``dequantize="auto"`` (the default
        here) finds the columns that are rounded (``realnvp.data.rounding``: integers, prices,
        one-decimal measurements) and dequantizes them; pass None (or "none") to take every
        column as continuous, or the steps.

        ``x_train`` may instead be a ``TableSummary`` of training rows that are not in memory
        (``realnvp.training.rows``): their number, a sample and their statistics."""
        summary = x_train if isinstance(x_train, TableSummary) else _summary(x_train, context)
        context = summary.context_sample
        sized = cls.defaults_for(summary.shape, conditional=context is not None)
        options = {"dequantize": "auto", **sized, **options}
        if isinstance(options["dequantize"], str):
            options["dequantize"] = _auto_rounding(options["dequantize"], summary.sample)
        sizes = {"features": summary.shape[1], "standardize": True}
        if context is not None:
            sizes["context_features"] = context.shape[1]
        flow = cls(**{**options, **sizes})
        flow.set_standardization(*[torch.as_tensor(m) for m in summary.moments])
        return flow

    @classmethod
    def defaults_for(cls, shape: tuple[int, ...], conditional: bool = False) -> dict[str, Any]:
        """The model for a table of ``shape`` (N training rows, D columns), modelled given a
        context when ``conditional``: conditioners whose width grows with the rows, so a small
        table gets a small model (see ``table_sizes``)."""
        return table_sizes(shape[0], shape[1], conditional)[0]

    @classmethod
    def recipe_for(cls, shape: tuple[int, ...]) -> TrainConfig:
        """The recipe for a table of ``shape`` (N training rows, D columns): batches and
        evaluations sized to the rows (see ``table_sizes``)."""
        return replace(cls.recipe, **table_sizes(shape[0], shape[1])[1])

    def prepare(self, x: ArrayLike | Tensor, seed: int = 0) -> Tensor:
        """Rows to score: the rounded columns dequantized once with noise drawn from ``seed``
        alone (the same on every process of a torchrun job; the rest as they are)."""
        x = self.as_input(x)
        if self.rounding is None:
            return x
        g = torch.Generator(device=x.device).manual_seed(seed)
        return self._dequantize(x, torch.rand(x.shape, generator=g, device=x.device))

    def training_batch(self, x: Tensor, step: int, seed: int) -> Tensor:
        """A training batch with fresh noise over each rounded column's step, drawn from
        ``(seed, step)``: ``x + step_j * (u - 1/2)`` (see ``Dequantizer``)."""
        if self.rounding is None:
            return x
        return self._dequantize(x, Dequantizer(seed).noise(x, step))

    def _dequantize(self, x: Tensor, u: Tensor) -> Tensor:
        steps = torch.tensor(self.rounding, dtype=x.dtype, device=x.device)
        return x + steps * (u.to(x.dtype) - 0.5)

    @property
    def log_cell(self) -> float:
        """``sum_j log step_j`` over the rounded columns (0 if none): add it to a log-density of
        dequantized rows for a bound on the log-probability of the rounded rows."""
        return float(sum(math.log(s) for s in self.rounding or () if s > 0))

    @property
    def couplings(self) -> list[Bijection]:
        """The layers after the standardization: the couplings, after a ``ContextAffine``
        when the flow has one."""
        layers = cast("Iterable[Bijection]", self.transform.layers)  # Compose's bijections
        return [b for b in layers if not isinstance(b, Standardize)]

    @property
    def input_dtype(self) -> torch.dtype:
        """float64 when the flow standardizes (it does so in float64), else its own dtype."""
        return torch.float64 if isinstance(self.transform[0], Standardize) else self.dtype

    @property
    def context_dtype(self) -> torch.dtype:
        """float64 when the flow standardizes (contexts too), else its own dtype."""
        return self.input_dtype

    def embed(self, context: Tensor) -> Tensor:
        """The context, standardized (in float64) when the flow standardizes, through
        ``context_net``: (B, C) -> (B, E)."""
        if self.context_standardize is not None:
            context = self.context_standardize(context)[0]
        return super().embed(context)

    def context_mismatch(self, context: NDArray) -> str | None:
        """Contexts of another width than ``context_features``, or a value that is not
        finite (named by row and column)."""
        if self.context_shape is not None and np.ndim(context) == 2:
            bad = ~np.isfinite(np.asarray(context, dtype=np.float64))
            if bad.any():
                row, col = np.argwhere(bad)[0]
                return f"context row {row + 1}, column {col + 1} is {context[row][col]}, not finite"
        return super().context_mismatch(context)

    def in_range(self, x: Tensor) -> Tensor:
        """Which values of the data ``x`` (N, D) the flow can take: False where a value,
        after the standardization if there is one, overflows the flow's dtype (a ``1e300`` that
        float64 holds but float32 cannot). Same shape as ``x``."""
        x = x.to(torch.float64)
        first = self.transform[0]
        if isinstance(first, Standardize):
            x = (x - first.mean.to(x.device)) / first.std.to(x.device)
        return x.abs() <= torch.finfo(self.dtype).max

    def set_standardization(
        self,
        mean: Tensor,
        std: Tensor,
        context_mean: Tensor | None = None,
        context_std: Tensor | None = None,
    ) -> None:
        """Set the data mean and std that the first layer removes (needs ``standardize=True``),
        and for a conditional flow the contexts' mean and std."""
        first = self.transform[0]
        if not isinstance(first, Standardize):
            raise ConfigError("this flow was built with standardize=False")
        first.set_statistics(mean, std)
        if context_mean is not None and self.context_standardize is not None:
            if context_std is None:  # the TypeError set_statistics would raise, named
                raise TypeError("context_mean needs context_std")
            self.context_standardize.set_statistics(context_mean, context_std)


def _mlps(
    hidden: int, hidden_layers: int, activation: str, dtype: torch.dtype | None
) -> Conditioner:
    """The conditioner factory: an ``MLP`` of these sizes for each (input, output) size."""
    return lambda i, o: MLP(i, o, hidden, hidden_layers, activation, compute_dtype=dtype)


def _coupling(
    mask: Tensor, conditioner: Conditioner, coupling: str, options: tuple[Any, ...], c: int
) -> Bijection:
    """The coupling called ``coupling``, with its own ``options``: ``(scale_init, max_scale)``
    for ``"affine"``, ``(bins, tail_bound)`` for ``"spline"``, none for ``"additive"``."""
    if coupling == "affine":
        scale_init, max_scale = options
        return AffineCoupling(mask, conditioner, scale_init, max_scale, context_features=c)
    if coupling == "spline":
        bins, bound = options
        return SplineCoupling(mask, conditioner, bins, bound, context_features=c)
    return AdditiveCoupling(mask, conditioner, c)


#: a table recipe's regularization: the decay of the weights' moving average, and weight decay
#: up to ``WEIGHT_DECAY_ROWS`` training rows, beyond which it falls as 1 / rows (see
#: ``table_sizes``)
TABLE_EMA, TABLE_WEIGHT_DECAY, WEIGHT_DECAY_ROWS = 0.995, 3e-3, 11_200


def table_sizes(
    rows: int, features: int, conditional: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The defaults for a table of ``rows`` training rows and ``features`` columns, chosen by
    the table's size alone (never per data set): the model's arguments and the recipe's. They
    were chosen on ``benchmarks/tables.py`` (see its results).

    - Coupling: rational-quadratic splines. On the real tables of the benchmark (190 to 37,758
      training rows) they were ahead of affine couplings by 0.01 to 2.6 nats per row (its
      ``realnvp_affine`` ablation; on diamonds the affine run stopped early); on its
      known-density table (11,200 rows) behind by 0.019.
    - Masks: rolling for more than 2 columns, so every two columns condition on each other in
      some layer (in a one-seed comparison, 0.35 nats per row better on boston and quakes).
    - Width: ``2 sqrt(rows)`` rounded to a power of two, from 32 to 256, so the number of
      parameters grows with the rows: a table of 300 rows gets 32 hidden units, one of 3,000
      rows 128, one of 10,000 rows 256.
    - Batches of an eighth of the rows (32 to 512), so a small table still takes several steps
      an epoch; validation once an epoch (at most every 100 steps), so early stopping sees a
      small table's overfitting when it starts.
    - Regularization: the weights' moving average (``ema``, Polyak averaging, decay 0.995) is
      what is validated, early-stopped and kept, and weight decay 3e-3. Without them, splines
      overfit the 11,200 training rows of the benchmark's known-density table within about
      450 steps; with both, its gap to the exact NLL at 3,000 steps fell from 0.079 to 0.041
      (mean of 3 seeds; ``benchmarks/table_recipe.py`` and its results). Runs that stop early
      average with the decay's warm-up ``(1 + t) / (10 + t)`` (0.995 is reached at step 1,790),
      which is why 0.99 and 0.995 tie there.
    - Weight decay beyond that table's size: ``3e-3 * 11,200 / rows`` (two significant
      digits), so larger tables are held less. Adam's L2 is a Gaussian prior on the weights,
      and a fixed prior weighs ``1 / rows`` in the mean loss over the rows. On two moons'
      20,000 rows, 3e-3 left the defaults 0.009 to 0.014 nats from the exact NLL after 5,000
      steps (3 seeds; within 0.01 in one); with 1.7e-3, 0.007 to 0.009, within 0.01 in all
      three (``benchmarks/vectors.py --ttq realnvp-default-compile``, README's Performance
      section). Smaller tables keep 3e-3: what was measured there.

    - Conditional tables (``conditional``, ``p(x | c)``): the same, with a ``ContextAffine``
      first (``context_affine``), because a spline maps ``[-B, B]`` onto itself and so cannot
      follow a context that moves or scales ``x`` far beyond it. On ``x | c ~ N(0, e^{2c})``
      splines alone stay 0.31 nats from the exact NLL, and 0.03-0.05 with the layer
      (``benchmarks/context_affine.py``).

    Examples:
        >>> model, recipe = table_sizes(300, 2)
        >>> model
        {'coupling': 'spline', 'hidden_features': 32}
        >>> recipe
        {'batch_size': 37, 'eval_every': 8, 'ema': 0.995, 'weight_decay': 0.003}
        >>> table_sizes(50_000, 7)[0]
        {'coupling': 'spline', 'hidden_features': 256, 'masks': 'rolling'}
        >>> table_sizes(50_000, 7)[1]
        {'batch_size': 512, 'eval_every': 97, 'ema': 0.995, 'weight_decay': 0.00067}
    """
    hidden = int(min(256, max(32, 2 ** round(math.log2(2 * math.sqrt(max(rows, 1)))))))
    batch = int(min(512, max(32, rows // 8)))
    per_epoch = max(1, rows // batch)
    model = {"coupling": "spline", "hidden_features": hidden}
    model.update({"masks": "rolling"} if features > 2 else {})
    model.update({"context_affine": True} if conditional else {})
    recipe = {"batch_size": batch, "eval_every": min(100, per_epoch)}
    decay = float(f"{TABLE_WEIGHT_DECAY * min(1.0, WEIGHT_DECAY_ROWS / max(rows, 1)):.2g}")
    return model, {**recipe, "ema": TABLE_EMA, "weight_decay": decay}


def _first_mask(mask: Tensor | list[bool] | None, features: int) -> Tensor:
    first = half_mask(features) if mask is None else validate_mask(torch.as_tensor(mask))
    if first.shape != (features,):
        raise ConfigError(f"must have shape ({features},), got {tuple(first.shape)}", "mask")
    return first


def _check_arguments(
    features: int,
    num_layers: int,
    coupling: str,
    masks: str,
    context_affine: bool = False,
    context_features: int = 0,
) -> None:
    if context_affine and not context_features:
        raise ConfigError("needs a context (context_features > 0)", "context_affine")
    if features < 2:
        raise ConfigError(f"Real NVP needs at least 2 to couple, got {features}", "features")
    if num_layers < 1:
        raise ConfigError(f"must be at least 1, got {num_layers}", "num_layers")
    if coupling not in ("affine", "additive", "spline"):
        raise ConfigError(f"must be 'affine', 'additive' or 'spline', got {coupling!r}", "coupling")
    if masks not in ("alternate", "rolling"):
        raise ConfigError(f"must be 'alternate' or 'rolling', got {masks!r}", "masks")


def _optional_config(
    context_features: int,
    context_net: nn.Module | None,
    extra: dict[str, Any],
    rounding: list[float] | None,
) -> dict[str, Any]:
    """The config entries only some flows have, so that the configs of the others (and their
    saved runs) stay as they were: a conditional flow's context size (and "custom" for a
    context_net of its own), ``extra`` (a spline's bins and tail bound, rolling masks), a
    table's rounding steps."""
    out: dict[str, Any] = {"context_features": context_features} if context_features else {}
    out.update({"context_net": "custom"} if context_net is not None else {})
    out.update(extra)
    out.update({"dequantize": rounding} if rounding else {})
    return out


def _auto_rounding(how: str, x: NDArray) -> list[float] | None:
    """The rounding steps ``dequantize="auto"`` finds in ``x`` (None: none), or None for
    ``"none"``."""
    if how not in ("auto", "none"):
        raise ConfigError(
            f"must be 'auto', 'none', None or a step per column, got {how!r}", "dequantize"
        )
    if how == "none":
        return None
    steps = rounding_steps(x)
    return steps.tolist() if steps.any() else None


def _rounding(dequantize: list[float] | None, features: int) -> list[float] | None:
    """The rounding steps as a list of floats (None when there are none), checked."""
    if dequantize is None:
        return None
    steps = [float(s) for s in dequantize]
    if len(steps) != features or not all(math.isfinite(s) and s >= 0 for s in steps):
        raise ConfigError(
            f"must be {features} finite steps >= 0 (0: continuous), got {dequantize!r}",
            "dequantize",
        )
    return steps if any(steps) else None


def _moments(x: NDArray) -> list[NDArray]:
    """Each column's mean and std, in float64 (a constant column gets std 1)."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused by Standardize
        std = x.std(0)
    return [x.mean(0), np.where(std > 0, std, 1.0)]


def _summary(x: NDArray, context: NDArray | None) -> TableSummary:
    """The summary of training rows ``x`` in memory (and their contexts): all of them."""
    x = np.asarray(x, dtype=np.float64)
    if context is None:
        return TableSummary(len(x), x, _moments(x))
    context = np.asarray(context, dtype=np.float64)
    return TableSummary(len(x), x, _moments(x) + _moments(context), context)


def _embedding_features(context_features: int, context_net: nn.Module | None) -> int:
    """E, the size of the embedded context the conditioners see: C, or what ``context_net``
    makes of a (2, C) batch of zeros."""
    if isinstance(context_net, str):
        raise ConfigError(
            "a custom context_net is not saved with the model; build the flow in Python with it "
            "(RealNVP(..., context_net=net)) and load the saved weights",
            "context_net",
        )
    if context_features < 0:
        raise ConfigError(f"must be at least 0, got {context_features}", "context_features")
    if context_net is None or not context_features:
        if context_net is not None:
            raise ConfigError("a context_net needs context_features > 0", "context_net")
        return context_features
    with torch.no_grad():
        out = context_net(torch.zeros(2, context_features))
    if out.dim() != 2 or out.shape[0] != 2:
        raise ConfigError(
            f"must map (B, {context_features}) to (B, E), gave {tuple(out.shape)} for B = 2",
            "context_net",
        )
    return out.shape[1]
