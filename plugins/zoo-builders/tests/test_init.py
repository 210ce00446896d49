"""Initialisers (d2l §6.3), applied with module.apply, to a whole network or one sub-block."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zoo_builders import init_constant, init_kaiming, init_mixture, init_normal, init_xavier
from zoo_core import ZooError


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, 200), nn.Conv2d(3, 8, 5))


def test_init_normal_and_constant():
    torch.manual_seed(0)
    net = _net()
    net.apply(init_normal(0.01))
    for layer in (net[0], net[2], net[3]):
        assert abs(layer.weight.std().item() - 0.01) < 0.001 and abs(layer.weight.mean().item()) < 0.001
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    net.apply(init_constant(42))
    assert (net[0].weight == 42).all() and (net[3].weight == 42).all() and (net[0].bias == 0).all()


def test_init_xavier_and_kaiming_have_their_scales():
    torch.manual_seed(0)
    net = _net()
    net.apply(init_xavier())
    bound = math.sqrt(6 / (400 + 300))
    assert net[0].weight.abs().max() <= bound and net[0].weight.abs().max() > 0.99 * bound
    assert abs(net[0].weight.std().item() - bound / math.sqrt(3)) < 0.01 * bound
    net.apply(init_kaiming())
    assert abs(net[2].weight.std().item() - math.sqrt(2 / 300)) < 0.02 * math.sqrt(2 / 300)
    assert (net[2].bias == 0).all()


def test_initialisers_apply_per_sub_block():
    net = _net()
    net[0].apply(init_xavier())
    net[2].apply(init_constant(42))
    assert (net[2].weight == 42).all()
    assert not (net[0].weight == 42).any() and net[0].weight.abs().max() <= math.sqrt(6 / 700)


def test_init_mixture_proportions_and_exact_ranges():
    torch.manual_seed(0)
    layer = nn.Linear(1000, 1000)  # 10^6 weights: a proportion's standard error is <= 0.0005
    layer.apply(init_mixture())
    w = layer.weight.flatten()
    zero, pos, neg = (w == 0), (w > 0), (w < 0)
    n = w.numel()
    assert abs(zero.sum().item() / n - 0.5) < 0.005
    assert abs(pos.sum().item() / n - 0.25) < 0.005
    assert abs(neg.sum().item() / n - 0.25) < 0.005
    assert ((w[pos] >= 5) & (w[pos] <= 10)).all() and ((w[neg] >= -10) & (w[neg] <= -5)).all()
    assert not torch.signbit(w[zero]).any()  # +0.0, not -0.0
    # uniform within each range: mean 7.5 / -7.5, and both ends reached
    assert abs(w[pos].mean().item() - 7.5) < 0.02 and abs(w[neg].mean().item() + 7.5) < 0.02
    assert w[pos].min() < 5.01 and w[pos].max() > 9.99
    assert (layer.bias == 0).all()


def test_initialising_an_unmaterialised_lazy_layer_is_an_error():
    net = nn.Sequential(nn.LazyLinear(8))
    with pytest.raises(ZooError, match="lazy"):
        net.apply(init_normal())
    net(torch.rand(2, 5))  # materialised: now it works
    net.apply(init_constant(1.0))
    assert (net[0].weight == 1).all()
