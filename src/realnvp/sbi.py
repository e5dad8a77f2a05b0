"""A conditional Real NVP as the density estimator of the ``sbi`` package's neural posterior
estimation (NPE): ``NPE(prior, density_estimator=realnvp_nn())``.

``sbi`` (0.24 or later; ``pip install sbi``, which keeps the torch you have) is needed only here.
sbi trains the estimator with its own loop, calling ``loss(theta, x)``, then samples and scores the
posterior through ``sample`` and ``log_prob`` with its shape conventions: inputs ``(sample_dim,
batch_dim, *event)``, conditions ``(batch_dim, *condition)``.

Example (not run here: it needs sbi):

    from sbi.inference import NPE
    from realnvp.sbi import realnvp_nn

    inference = NPE(prior, density_estimator=realnvp_nn(num_layers=8, hidden_features=128))
    estimator = inference.append_simulations(theta, x).train()
    samples = inference.build_posterior(estimator).sample((10_000,), x=x_observed)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator
from torch import Tensor, nn

from realnvp.models import RealNVP


class RealNVPEstimator(ConditionalDensityEstimator):
    """sbi's ``ConditionalDensityEstimator`` around a conditional ``RealNVP`` of theta given x.

    ``flow.log_prob(theta, x)`` is the exact ``log q(theta | x)``; the flow standardizes theta and
    x inside itself (from the first batch sbi gives the builder), so ``log_prob`` is in theta's
    own units."""

    def __init__(self, flow: RealNVP, input_shape: torch.Size, condition_shape: torch.Size):
        super().__init__(net=flow, input_shape=input_shape, condition_shape=condition_shape)

    @property
    def embedding_net(self) -> nn.Module:
        """The network the (standardized) condition passes through."""
        return self.net.context_net or nn.Identity()

    def log_prob(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """``log q(theta | x)``: input (sample_dim, batch_dim, D) or (batch_dim, D), condition
        (batch_dim, C) -> (sample_dim, batch_dim)."""
        input, condition, batch = self._broadcast_and_align(input, condition)
        samples = input.shape[0]
        theta = input.reshape(samples * batch, -1)
        x = condition.reshape(samples * batch, -1)
        log_q = self.net.log_prob(self.net.as_input(theta), x)
        return log_q.reshape(samples, batch).to(input.dtype)

    def loss(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """The negative log-likelihood of each pair: (batch_dim,)."""
        return -self.log_prob(input.unsqueeze(0), condition)[0]

    def sample(self, sample_shape: torch.Size, condition: Tensor, **kwargs: Any) -> Tensor:
        """Samples of theta for each condition: (*sample_shape, batch_dim, D)."""
        n = int(torch.Size(sample_shape).numel())
        theta = self.net.sample(n, condition.reshape(-1, *self.condition_shape))
        return theta.reshape(*sample_shape, *theta.shape[1:]).to(condition.dtype)

    def sample_and_log_prob(
        self, sample_shape: torch.Size, condition: Tensor, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """Samples and their ``log q`` from one inverse pass."""
        n = int(torch.Size(sample_shape).numel())
        theta, log_q = self.net.sample_and_log_prob(n, condition.reshape(-1, *self.condition_shape))
        shape = tuple(sample_shape)
        return (
            theta.reshape(*shape, *theta.shape[1:]).to(condition.dtype),
            log_q.reshape(*shape, *log_q.shape[1:]).to(condition.dtype),
        )


def realnvp_nn(
    embedding_net: nn.Module | None = None, **options: Any
) -> Callable[[Tensor, Tensor], RealNVPEstimator]:
    """A builder of sbi's density estimator, as ``sbi.neural_nets.posterior_nn`` returns: sbi
    calls it with a batch of simulations ``(theta, x)``, from which the flow takes its sizes and
    its standardization of theta and x; ``embedding_net`` embeds the standardized x;
    ``options`` are ``RealNVP``'s (``num_layers``, ``hidden_features``, ...)."""

    def build(batch_theta: Tensor, batch_x: Tensor) -> RealNVPEstimator:
        theta = batch_theta.detach().double().cpu().numpy()
        x = batch_x.detach().double().cpu().numpy().reshape(len(batch_x), -1)
        flow = RealNVP.for_data(theta, context=x, context_net=embedding_net, **options)
        return RealNVPEstimator(flow, batch_theta.shape[1:], batch_x.shape[1:])

    return build
