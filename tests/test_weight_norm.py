"""The ResNets' weight-normalized convolution: the function, parameters and gradients of torch's
``weight_norm`` parametrization on an ``nn.Conv2d`` (the class the image models used before), as
one plain class that every convolution of every ResNet shares."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from realnvp.models import MultiScaleRealNVP
from realnvp.nn import WeightNormConv2d


def test_weight_norm_conv_is_torchs_parametrized_conv_bit_for_bit() -> None:
    """Built from the same seed, it has the parametrization's parameters (names, order, values:
    a saved run's optimizer state is matched by order) and gives the same output and gradients
    to the last bit. Fails if g were initialised from another norm, if v or g were swapped, or if
    the weight were formed by another formula than the parametrization's kernel."""
    torch.manual_seed(0)
    ours = WeightNormConv2d(3, 5)
    torch.manual_seed(0)
    theirs = weight_norm(nn.Conv2d(3, 5, 3, padding=1))
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():  # a magnitude away from ||v||, as training leaves it
        for conv in (ours, theirs):
            conv.get_parameter("parametrizations.weight.original0").mul_(1.7)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    out_ours, out_theirs = ours(x), theirs(x)
    assert torch.equal(out_ours, out_theirs)
    grads_ours = torch.autograd.grad(out_ours.square().sum(), [x, *ours.parameters()])
    grads_theirs = torch.autograd.grad(out_theirs.square().sum(), [x, *theirs.parameters()])
    for a, b in zip(grads_ours, grads_theirs, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(ours.weight, theirs.weight)


def test_every_resnet_convolution_is_one_class() -> None:
    """torch.compile shares a compiled region between modules of one class; the parametrization
    made every convolution its own class (ParametrizedConv2d, generated per instance)."""
    model = MultiScaleRealNVP((1, 8, 8), 256, num_scales=2, hidden_channels=4, num_blocks=2)
    convs = [m for m in model.modules() if "Conv" in type(m).__name__]
    assert len(convs) > 20
    assert {type(m) for m in convs} == {WeightNormConv2d}
