"""Properties of all nine models beyond the shared contract: registration without torch, the book's Xavier
initialisation really applied, and outputs independent of the memory format (the trainer uses channels_last on CUDA).
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from zoo_core import get_model, list_models

NAMES = ["alexnet", "vgg", "nin", "googlenet", "bn-lenet-scratch", "bn-lenet", "resnet18", "regnetx32", "densenet"]


def test_the_nine_models_of_chapter_8_are_registered():
    specs = list_models(plugin="zoo-modern-cnn")
    assert sorted(s.name for s in specs) == sorted(NAMES)
    assert all(s.chapter == 8 and s.dataset == "fashion-mnist" for s in specs)


def test_registering_imports_no_torch():
    code = ("import sys, zoo_modern_cnn, zoo_modern_cnn.plugin; from zoo_core import list_models; "
            "list_models(plugin='zoo-modern-cnn'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", NAMES)
def test_xavier_initialisation_is_applied_after_materialisation(name):
    """Every conv and dense weight is Xavier-uniform (d2l init_cnn): within its bound, with about its variance.

    The book applies init_cnn in __init__, where lazy layers have no weights and it does nothing; PyTorch's default
    (Kaiming-uniform, a=sqrt(5)) has variance 1 / (3 fan_in), which differs from Xavier's 2 / (fan_in + fan_out).
    """
    torch.manual_seed(0)
    model = get_model(name, preset="tiny")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers
    telling = []  # weights scaled to unit Xavier variance, from layers where the two variances differ by > 30%
    for layer in layers:
        w = layer.weight.detach()
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
        xavier, default = 2 / (fan_in + fan_out), 1 / (3 * fan_in)
        assert w.abs().max() <= math.sqrt(3 * xavier) + 1e-6, f"{layer} exceeds the Xavier bound"
        if abs(xavier - default) > 0.3 * xavier:
            telling.append(w.flatten() / math.sqrt(xavier))
    pooled = torch.cat(telling)
    assert pooled.numel() >= 500, "too few weights to tell Xavier from the default initialisation"
    assert abs(pooled.var().item() - 1) < 0.15


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_gives_the_same_outputs(name):
    torch.manual_seed(0)
    model = get_model(name, preset="tiny").eval()
    (X,) = model.example_inputs(3)
    with torch.no_grad():
        expected = model(X)
        model.to(memory_format=torch.channels_last)
        got = model(X.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
