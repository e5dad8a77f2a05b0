"""Checks a trained flow on real points: is it invertible, and is its log-det exact?"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor

from realnvp.models import Flow


def jacobian_log_det(flow: Flow | Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor) -> Tensor:
    """log|det df/dx| per example of ``x`` (B, ...) from the dense autograd Jacobian of a flow's
    transform (or of any bijection): one backward pass per output dimension, each giving that
    row of every example's Jacobian."""
    x = x.detach().clone().requires_grad_(True)
    f = flow.transform if isinstance(flow, Flow) else flow
    z = f(x)[0].reshape(len(x), -1)
    rows = [
        torch.autograd.grad(z[:, j].sum(), x, retain_graph=True)[0].reshape(len(x), -1)
        for j in range(z.shape[1])
    ]
    jac = torch.stack(rows, dim=1)  # (B, D_out, D_in)
    return torch.linalg.slogdet(jac).logabsdet


#: the points the log-det is checked on, by default
MAX_POINTS = 256


def audit(
    flow: Flow, x: Tensor, max_points: int = MAX_POINTS, context: Tensor | None = None
) -> dict[str, float]:
    """The largest round-trip error ``|f^-1(f(x)) - x|`` over ``x`` (given each row's
    ``context``, for a conditional flow), in the model's dtype and in units of each column's
    spread, and the largest difference between the flow's log-det and the autograd Jacobian's,
    computed in float64 on the first ``max_points`` rows."""
    flow = flow.eval()
    with torch.no_grad():
        spread = x.std(0).clamp_min(1e-12) if len(x) > 1 else torch.ones_like(x[0])
        z = flow.encode(x, context)
        inverse_error = ((flow.decode(z, context) - x).abs() / spread).max().item()
    flow64 = copy.deepcopy(flow).double()
    x64 = x[:max_points].double()
    h = None if context is None else flow64._context(context[:max_points], len(x64))
    exact = jacobian_log_det(lambda v: flow64.transform(v, h), x64)
    with torch.no_grad():
        claimed = flow64.transform(x64, h)[1]
    return {
        "points": len(x),
        "inverse_error": inverse_error,
        "log_det_error": (claimed - exact).abs().max().item(),
        "log_det_points": len(x64),
    }
