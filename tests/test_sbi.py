"""A conditional Real NVP as sbi's density estimator: NPE trains it with sbi's own loop and its
posterior matches the exact one of a linear Gaussian model."""

from __future__ import annotations

import pytest
import torch

sbi_inference = pytest.importorskip("sbi.inference")

from realnvp.sbi import RealNVPEstimator, realnvp_nn  # noqa: E402


def test_npe_with_a_realnvp_recovers_the_exact_gaussian_posterior(tmp_path, monkeypatch) -> None:
    """theta ~ N(0, I_2), x = theta + N(0, 0.5^2 I): the posterior of theta given x is
    N(x / 1.25, 0.2 I), so its mean and spread are known exactly."""
    monkeypatch.chdir(tmp_path)  # sbi writes its TensorBoard logs to ./sbi-logs
    torch.manual_seed(0)
    prior = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    theta = prior.sample((4000,))
    x = theta + 0.5 * torch.randn_like(theta)
    builder = realnvp_nn(num_layers=4, hidden_features=32)
    inference = sbi_inference.NPE(prior, density_estimator=builder, show_progress_bars=False)
    estimator = inference.append_simulations(theta, x).train(max_num_epochs=30)
    assert isinstance(estimator, RealNVPEstimator)
    x_o = torch.tensor([[1.0, -0.5]])
    samples = inference.build_posterior(estimator).sample((4000,), x=x_o, show_progress_bars=False)
    assert samples.shape == (4000, 2)
    assert torch.allclose(samples.mean(0), x_o[0] / 1.25, atol=0.08)
    assert torch.allclose(samples.std(0), torch.full((2,), 0.2**0.5), rtol=0.15)


def test_the_estimator_follows_sbis_shapes() -> None:
    theta, x = torch.randn(64, 3), torch.randn(64, 2)
    estimator = realnvp_nn(num_layers=2, hidden_features=8)(theta, x)
    assert estimator.log_prob(theta[:5], x[:5]).shape == (1, 5)
    assert estimator.log_prob(theta[:10].reshape(2, 5, 3), x[:5]).shape == (2, 5)
    assert estimator.loss(theta[:5], x[:5]).shape == (5,)
    samples = estimator.sample((7,), x[:4])
    assert samples.shape == (7, 4, 3)
    draws, log_q = estimator.sample_and_log_prob((6,), x[:2])
    assert draws.shape == (6, 2, 3) and log_q.shape == (6, 2)
    again = estimator.log_prob(draws, x[:2])
    assert torch.allclose(again, log_q, atol=1e-4)
