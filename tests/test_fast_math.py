"""`zoo_core.fast_math`: the sigmoid form of tanh against float64's tanh, where the recurrences use it."""

import math

import torch

from zoo_core.fast_math import tanh_


def test_tanh_matches_float64_tanh_to_a_few_ulp_of_one():
    x = torch.cat((torch.linspace(-12, 12, 200_001), torch.linspace(-1e-3, 1e-3, 10_001),
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, 3e38, -3e38])))
    got = tanh_(x.clone())
    want = x.double().tanh()
    assert (got.double() - want).abs().max().item() < 2.5e-7  # 2 ulp of 1.0 (float32's eps is 1.19e-7)
    # saturates to exactly +-1, and stays within [-1, 1]
    assert got[x > 10].eq(1).all() and got[x < -10].eq(-1).all()
    assert got.abs().max().item() <= 1.0


def test_tanh_is_in_place_and_keeps_nan_and_infinities():
    x = torch.tensor([math.inf, -math.inf, math.nan, 0.5])
    y = tanh_(x)
    assert y.data_ptr() == x.data_ptr()
    assert y[0] == 1 and y[1] == -1 and y[2].isnan()
    assert abs(y[3].item() - math.tanh(0.5)) < 2.5e-7


def test_tanh_on_a_strided_view_writes_only_the_view():
    base = torch.zeros(4, 6)
    view = base[:, 1::2]
    view.fill_(1.0)
    tanh_(view)
    assert torch.allclose(base[:, 1::2], torch.full((4, 3), math.tanh(1.0)))
    assert base[:, ::2].eq(0).all()
