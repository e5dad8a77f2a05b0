"""A scikit-learn density estimator, shaped like ``sklearn.neighbors.KernelDensity``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from realnvp.config import VAL_FRACTION
from realnvp.errors import ConfigError
from realnvp.models import RealNVP
from realnvp.training.loop import evaluate_nll
from realnvp.training.runs import fit_data, split

# The defaults are the library's: RealNVP's constructor and its recipe.
_MODEL, _RECIPE = RealNVP.defaults(), RealNVP.recipe


class RealNVPDensity(BaseEstimator):
    """Real NVP density estimation with scikit-learn's interface.

    ``fit(X)`` standardizes X with its training rows' mean and std (inside the flow, so densities
    stay in X's units), trains with Adam and keeps the weights of the best validation NLL.

    Args:
        num_layers, hidden_features, num_hidden_layers: the model (see ``RealNVP``).
        steps, batch_size, lr, patience: the training recipe (see ``TrainConfig``); the rest of
            ``RealNVP.recipe`` applies as it is.
        val_fraction: the share of the rows held out for validation (none below 10 rows).
        random_state: seed of the model, the split and the batches.
        device: "cpu", "cuda" or "auto".

    Example:
        >>> from sklearn.datasets import make_moons
        >>> X, _ = make_moons(500, noise=0.05, random_state=0)
        >>> est = RealNVPDensity(num_layers=4, hidden_features=32, steps=50).fit(X)
        >>> est.score_samples(X[:3]).shape
        (3,)
    """

    def __init__(
        self,
        num_layers: int = _MODEL["num_layers"],
        hidden_features: int = _MODEL["hidden_features"],
        num_hidden_layers: int = _MODEL["num_hidden_layers"],
        steps: int = _RECIPE.steps,
        batch_size: int = _RECIPE.batch_size,
        lr: float = _RECIPE.lr,
        patience: int | None = _RECIPE.patience,
        val_fraction: float = VAL_FRACTION,
        random_state: int | None = None,
        device: str = "cpu",
    ):
        self.num_layers = num_layers
        self.hidden_features = hidden_features
        self.num_hidden_layers = num_hidden_layers
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
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
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        if X.shape[1] < 2:
            raise ConfigError(
                f"Real NVP needs at least 2 features to couple; got {X.shape[1]} feature"
            )
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        x_train, x_val = split(X, self.val_fraction if len(X) >= 10 else 0.0, seed)
        model = {
            "num_layers": self.num_layers,
            "hidden_features": self.hidden_features,
            "num_hidden_layers": self.num_hidden_layers,
        }
        config = replace(
            _RECIPE,
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            patience=self.patience,
            seed=seed,
        )
        self.flow_, self.history_ = fit_data(x_train, x_val, model, config, seed, self.device)
        return self

    def score_samples(self, X: ArrayLike) -> NDArray:
        """Log-density of each row of X, in X's units: shape (n_samples,)."""
        check_is_fitted(self, "flow_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        x = self.flow_.as_input(X)
        ok = self.flow_.in_range(x)
        if not bool(ok.all()):
            row, col = (int(i) for i in (~ok).nonzero()[0])
            raise ValueError(
                f"X[{row}, {col}] = {X[row, col]:g} is out of the range the model computes in "
                "(it overflows float32 after standardization)"
            )
        return -evaluate_nll(self.flow_, x).double().cpu().numpy()

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
