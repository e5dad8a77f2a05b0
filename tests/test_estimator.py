"""RealNVPDensity: scikit-learn's estimator checks, and use as a density estimator."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_moons
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity
from sklearn.utils.estimator_checks import parametrize_with_checks

from realnvp import RealNVPDensity

# Checks that cannot apply, and why:
EXPECTED_FAILED_CHECKS = {
    # These build data with a single feature; a coupling layer needs two features to split.
    "check_fit2d_1feature": "Real NVP needs at least 2 features (refused with a ValueError)",
}


def tiny(**kwargs) -> RealNVPDensity:
    return RealNVPDensity(
        num_layers=2, hidden_features=8, steps=10, batch_size=32, random_state=0, **kwargs
    )


@parametrize_with_checks([tiny()], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


@pytest.fixture(scope="module")
def moons() -> tuple[np.ndarray, np.ndarray]:
    x, _ = make_moons(3000, noise=0.05, random_state=0)
    return x[:2000], x[2000:]


def test_beats_a_kernel_density_of_the_same_data(moons) -> None:
    train, test = moons
    flow = RealNVPDensity(
        num_layers=6, hidden_features=64, steps=600, batch_size=256, lr=3e-3, random_state=0
    ).fit(train)
    gaussian = KernelDensity(bandwidth=0.5).fit(train)
    assert flow.score(test) > gaussian.score(test)
    assert flow.score(test) == pytest.approx(flow.score_samples(test).sum())


def test_sample_is_reproducible(moons) -> None:
    est = tiny().fit(moons[0])
    a, b = est.sample(50, random_state=3), est.sample(50, random_state=3)
    assert a.shape == (50, 2) and np.array_equal(a, b)
    assert not np.array_equal(a, est.sample(50, random_state=4))


def test_grid_search_picks_by_held_out_likelihood(moons) -> None:
    """One training step leaves the flow close to a standard normal on the standardized data;
    30 steps fit the moons far better on the held-out folds (by about 0.2 nats per point).
    GridSearchCV ranks by ``score``: if ``score`` returned the NLL instead of the log-likelihood
    (a sign error), it would rank the 1-step model first and both assertions would fail."""
    search = GridSearchCV(tiny(lr=1e-2), {"steps": [1, 30]}, cv=2, refit=False).fit(moons[0])
    assert search.best_params_ == {"steps": 30}
    one_step, trained = search.cv_results_["mean_test_score"]
    assert trained > one_step, (one_step, trained)


def test_one_feature_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="at least 2 features"):
        tiny().fit(np.random.default_rng(0).standard_normal((50, 1)))


# -- ConditionalRealNVPDensity ---------------------------------------------------------------
def conditional_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """y in 2-D; X's first column follows y's first, its second column's spread y's second."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, 2))
    X = np.c_[y[:, 0] + 0.1 * rng.normal(size=n), np.exp(y[:, 1] / 2) * rng.normal(size=n)]
    return X, y


def tiny_conditional(**kwargs):
    from realnvp import ConditionalRealNVPDensity

    options = {"num_layers": 2, "hidden_features": 16, "steps": 10, "batch_size": 64}
    return ConditionalRealNVPDensity(**{**options, "random_state": 0, **kwargs})


CONDITIONAL_EXPECTED_FAILED_CHECKS = {
    **EXPECTED_FAILED_CHECKS,
    # These call score_samples(X) alone; a conditional density needs each row's context too.
    "check_methods_sample_order_invariance": "score_samples(X, y) needs y",
    "check_methods_subset_invariance": "score_samples(X, y) needs y",
}


@parametrize_with_checks(
    [tiny_conditional()], expected_failed_checks=lambda est: CONDITIONAL_EXPECTED_FAILED_CHECKS
)
def test_sklearn_checks_of_the_conditional_estimator(estimator, check) -> None:
    check(estimator)


def test_the_conditional_estimator_uses_y() -> None:
    X, y = conditional_rows(2000, seed=0)
    X_test, y_test = conditional_rows(1000, seed=1)
    est = tiny_conditional(steps=300, lr=3e-3).fit(X, y)
    right = est.score(X_test, y_test)
    shuffled = est.score(X_test, y_test[np.random.default_rng(2).permutation(len(y_test))])
    assert right > shuffled + 300  # each row's own context explains it: > 0.3 nats per row
    assert est.score_samples(X_test[:4], y_test[:4]).shape == (4,)
    assert est.sample(7, y=[0.0, 1.0], random_state=0).shape == (7, 2)
    many = est.sample(7, y=y_test[:3], random_state=0)
    assert many.shape == (7, 3, 2)
    # draws for a context follow it: the first column sits near y's first column
    assert np.abs(est.sample(500, y=[2.0, 0.0], random_state=1)[:, 0].mean() - 2.0) < 0.3


def test_the_conditional_estimator_refuses_a_wrong_y() -> None:
    X, y = conditional_rows(200, seed=0)
    est = tiny_conditional().fit(X, y)
    with pytest.raises(ValueError, match=r"y has shape \(5, 3\); expected \(5, 2\)"):
        est.score_samples(X[:5], np.zeros((5, 3)))
    with pytest.raises(ValueError, match="y is required"):
        est.sample(3)


def test_the_conditional_estimator_in_a_pipeline_and_grid_search() -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = conditional_rows(600, seed=0)
    pipe = make_pipeline(StandardScaler(), tiny_conditional(lr=1e-2))
    search = GridSearchCV(pipe, {"conditionalrealnvpdensity__steps": [1, 40]}, cv=2)
    search.fit(X, y)
    assert search.best_params_ == {"conditionalrealnvpdensity__steps": 40}
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > scores[0]
    assert np.isfinite(search.score(X, y))


def test_a_rows_score_does_not_depend_on_the_rows_around_it() -> None:
    """The same row scores the same (to float64 rounding) wherever it sits in X. Bug: scored in
    float32, a row's
    score moved by ~1e-7 relative with the rows around it (matrix products round a row by
    where it falls in the BLAS blocks), which failed scikit-learn's sample-order check."""
    rng = np.random.RandomState(0)
    X = 3 * rng.uniform(size=(20, 5))
    for seed in range(3):
        est = RealNVPDensity(
            num_layers=2, hidden_features=8, batch_size=32, steps=10, random_state=seed
        ).fit(X)
        order = rng.permutation(len(X))
        a, b = est.score_samples(X)[order], est.score_samples(X[order])
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


def test_the_conditional_estimator_can_leave_out_its_context_affine() -> None:
    from realnvp import ConditionalRealNVPDensity
    from realnvp.bijections import ContextAffine

    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    X = np.c_[y + 0.1 * rng.normal(size=200), rng.normal(size=200)]
    small = {"num_layers": 2, "hidden_features": 8, "steps": 4, "random_state": 0}
    on = ConditionalRealNVPDensity(**small).fit(X, y).flow_
    off = ConditionalRealNVPDensity(**small, context_affine=False).fit(X, y).flow_
    assert isinstance(on.transform.layers[1], ContextAffine)
    assert not any(isinstance(b, ContextAffine) for b in off.transform.layers)
