"""scikit-learn density estimators: ``RealNVPDensity`` of X, shaped like
``sklearn.neighbors.KernelDensity``, and ``ConditionalRealNVPDensity`` of X given y."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from realnvp.config import VAL_FRACTION
from realnvp.data.checks import check_density_table
from realnvp.errors import ConfigError
from realnvp.models import RealNVP
from realnvp.training.loop import evaluate_nll
from realnvp.training.runs import fit_data, split

# The defaults are the library's: RealNVP's constructor and its recipe.
_MODEL, _RECIPE = RealNVP.defaults(), RealNVP.recipe


class RealNVPDensity(BaseEstimator):
    """Real NVP density estimation with scikit-learn's interface.

    ``fit(X)`` standardizes X with its training rows' mean and std (inside the flow, so densities
    stay in X's units), trains with Adam (and, by default, weight decay and a moving average of
    the weights) and keeps the (averaged) weights of the best validation NLL. X with
    a constant column, or with columns that are linear functions of each other, has no density:
    ``fit`` refuses it with a ValueError naming the columns.

    Args:
        num_layers: the number of coupling layers (see ``RealNVP``).
        hidden_features: the conditioners' width; None: chosen from the training rows' size
            (``RealNVP.defaults_for``, for the conditional estimator too).
        num_hidden_layers: the conditioners' depth.
        coupling: ``"affine"``, ``"additive"`` or ``"spline"``; None: chosen like
            ``hidden_features``.
        context_affine: the conditional estimator's ``ContextAffine`` layer (see ``RealNVP``);
            None: on, as the conditional defaults have it (give True only with a context).
        steps: the most optimizer steps (early stopping may end sooner); the rest of the
            training recipe is ``TrainConfig``'s, chosen from the training rows' size
            (``RealNVP.recipe_for``) where these arguments are None.
        batch_size: rows per step; None: from the rows' size.
        lr: Adam's learning rate.
        weight_decay: Adam's weight decay (an L2 term in its gradient); None: from the rows' size.
        ema: the decay of the weights' moving average; None: from the rows' size; ``0``
            trains without it.
        patience: evaluations without a better validation NLL before stopping (None: never).
        dequantize: "auto" finds rounded columns of X (integers, prices, one-decimal values)
            and trains on them with uniform noise over their step; None takes X as continuous.
        val_fraction: the share of the rows held out for validation (none below 10 rows).
        random_state: seed of the model, the split and the batches.
        device: "cpu", "cuda" or "auto".

    Examples:
        >>> from sklearn.datasets import make_moons
        >>> X, _ = make_moons(500, noise=0.05, random_state=0)
        >>> est = RealNVPDensity(num_layers=4, hidden_features=32, steps=50).fit(X)
        >>> est.score_samples(X[:3]).shape
        (3,)
    """

    def __init__(
        self,
        num_layers: int = _MODEL["num_layers"],
        hidden_features: int | None = None,
        num_hidden_layers: int = _MODEL["num_hidden_layers"],
        coupling: str | None = None,
        context_affine: bool | None = None,
        dequantize: str | None = "auto",
        steps: int = _RECIPE.steps,
        batch_size: int | None = None,
        lr: float = _RECIPE.lr,
        weight_decay: float | None = None,
        ema: float | None = None,
        patience: int | None = _RECIPE.patience,
        val_fraction: float = VAL_FRACTION,
        random_state: int | None = None,
        device: str = "cpu",
    ):
        self.num_layers = num_layers
        self.hidden_features = hidden_features
        self.num_hidden_layers = num_hidden_layers
        self.coupling = coupling
        self.context_affine = context_affine
        self.dequantize = dequantize
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.ema = ema
        self.patience = patience
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "density_estimator"
        tags.input_tags.two_d_array = True
        tags.target_tags.required = False
        return tags

    def fit(self, X: ArrayLike, y: None = None) -> RealNVPDensity:
        """Fit the density of the rows of X, shape (n_samples, n_features >= 2)."""
        data: NDArray = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        self._fit(data, None)
        return self

    def _fit(self, X: NDArray, context: NDArray | None) -> None:
        if X.shape[1] < 2:
            raise ConfigError(
                f"Real NVP needs at least 2 features to couple; got {X.shape[1]} feature"
            )
        names = getattr(self, "feature_names_in_", None)
        check_density_table(X, "X", None if names is None else list(names), how="of X")
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        fraction = self.val_fraction if len(X) >= 10 else 0.0
        x_train, x_val = split(X, fraction, seed)
        c_train, c_val = (None, None) if context is None else split(context, fraction, seed)
        model = {
            "num_layers": self.num_layers,
            "hidden_features": self.hidden_features,
            "num_hidden_layers": self.num_hidden_layers,
            "coupling": self.coupling,
            "context_affine": self.context_affine,
        }
        model = {k: v for k, v in model.items() if v is not None}  # None: sized to the data
        model["dequantize"] = "none" if self.dequantize is None else self.dequantize
        recipe: dict[str, Any] = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "ema": self.ema,
        }
        recipe = {k: v for k, v in recipe.items() if v is not None}  # None: sized to the data
        config = replace(
            RealNVP.recipe_for(x_train.shape),
            **recipe,
            patience=self.patience,
            seed=seed,
        )
        self.flow_, self.history_ = fit_data(
            x_train, x_val, model, config, seed, self.device, (), c_train, c_val
        )

    def score_samples(self, X: ArrayLike) -> NDArray:
        """Log-density of each row of X, in X's units: shape (n_samples,)."""
        check_is_fitted(self, "flow_")
        data: NDArray = validate_data(self, X, dtype=np.float64, reset=False)
        return self._log_density(data, None)

    def _log_density(self, X: NDArray, context: NDArray | None) -> NDArray:
        x = self.flow_.as_input(X)
        ok = self.flow_.in_range(x)
        if not bool(ok.all()):
            row, col = (int(i) for i in (~ok).nonzero()[0])
            raise ValueError(
                f"X[{row}, {col}] = {X[row, col]:g} is out of the range the model computes in "
                "(it overflows float32 after standardization)"
            )
        # Scored in float64: float32 matrix products round a row's result differently by where
        # the row falls in the BLAS blocks, so a row's float32 score moved (by ~1e-7 relative)
        # with the rows around it; in float64 that rounding is ~1e-16.
        flow = copy.deepcopy(self.flow_).double()
        c = None if context is None else flow.as_context(context)
        return -evaluate_nll(flow, flow.as_input(X), context=c).cpu().numpy()

    def score(self, X: ArrayLike, y: None = None) -> float:
        """Total log-likelihood of X (as ``KernelDensity.score``)."""
        return float(self.score_samples(X).sum())

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> NDArray:
        """Draw ``n_samples`` rows from the fitted density."""
        check_is_fitted(self, "flow_")
        seed = int(check_random_state(random_state).randint(2**31 - 1))
        generator = torch.Generator(device=self.flow_.device).manual_seed(seed)
        with torch.inference_mode():
            x = self.flow_.sample(n_samples, generator=generator)
        return self.flow_.to_data(x)


class ConditionalRealNVPDensity(RealNVPDensity):
    """Conditional density estimation ``p(X | y)`` with scikit-learn's interface: ``fit(X, y)``
    with y the context of each row, (n_samples,) or (n_samples, n_context); ``score_samples(X,
    y)`` the log-density of each row given its context; ``sample(n, y)``. It works in a
    ``Pipeline`` (which transforms X and passes y on) and in ``GridSearchCV``, which ranks
    parameters by ``score(X, y)``, the held-out total log-likelihood.

    X and y are standardized with their training rows' mean and std (inside the flow, so
    densities stay in X's units). The parameters are ``RealNVPDensity``'s.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.normal(size=300)
        >>> X = np.c_[y + 0.1 * rng.normal(size=300), rng.normal(size=300)]
        >>> est = ConditionalRealNVPDensity(num_layers=2, hidden_features=16, steps=20).fit(X, y)
        >>> est.score_samples(X[:3], y[:3]).shape, est.sample(5, y=0.5).shape
        ((3,), (5, 2))
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    # y is required here, where the unconditional fit takes none (as in score_samples, score)
    def fit(  # type: ignore[override]
        self, X: ArrayLike, y: ArrayLike
    ) -> ConditionalRealNVPDensity:
        """Fit the density of the rows of X (n_samples, n_features >= 2) given their contexts
        y, (n_samples,) or (n_samples, n_context)."""
        data, context = validate_data(
            self, X, y, dtype=np.float64, ensure_min_samples=2, multi_output=True, y_numeric=True
        )
        context = _as_2d(context)
        self.n_context_features_ = context.shape[1]
        self._fit(data, context)
        return self

    def _context(self, y: ArrayLike, rows: int | None = None) -> NDArray:
        y = _as_2d(check_array(y, dtype=np.float64, ensure_2d=False))
        if y.shape[1] != self.n_context_features_ or (rows is not None and len(y) != rows):
            n = "n" if rows is None else rows
            raise ValueError(f"y has shape {y.shape}; expected ({n}, {self.n_context_features_})")
        return y

    def score_samples(self, X: ArrayLike, y: ArrayLike) -> NDArray:  # type: ignore[override]
        """Log-density of each row of X given its context in y, in X's units: (n_samples,)."""
        check_is_fitted(self, "flow_")
        data: NDArray = validate_data(self, X, dtype=np.float64, reset=False)
        return self._log_density(data, self._context(y, len(data)))

    def score(self, X: ArrayLike, y: ArrayLike) -> float:  # type: ignore[override]
        """Total log-likelihood of X given y."""
        return float(self.score_samples(X, y).sum())

    def sample(  # type: ignore[override]
        self, n_samples: int = 1, y: ArrayLike | None = None, random_state: int | None = None
    ) -> NDArray:
        """``n_samples`` rows drawn given each context: y of one context, (n_context,) or a
        number, gives (n_samples, n_features); y of B contexts, (B, n_context) or (B,) for one
        context feature as in ``fit``, gives (n_samples, B, n_features), as
        ``torch.distributions`` shapes them."""
        check_is_fitted(self, "flow_")
        if y is None:
            raise ValueError("y is required: the context to sample given")
        one = np.ndim(y) == 0 or (np.ndim(y) == 1 and self.n_context_features_ > 1)
        context = self._context(np.reshape(y, (1, -1)) if one else y)
        seed = int(check_random_state(random_state).randint(2**31 - 1))
        generator = torch.Generator(device=self.flow_.device).manual_seed(seed)
        with torch.inference_mode():
            x = self.flow_.sample(n_samples, context[0] if one else context, generator=generator)
        return self.flow_.to_data(x)


def _as_2d(y: NDArray) -> NDArray:
    return y.reshape(-1, 1) if y.ndim == 1 else y
