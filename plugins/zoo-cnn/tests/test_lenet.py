"""Chapter 7.6: LeNet has the book's layers and Xavier initialisation, computes in channels-last memory, and reaches
the book's accuracy on real Fashion-MNIST."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zoo_core import Trainer, get_data, get_model
from zoo_core.testing import require_data
from zoo_cnn import LeNet, conv_output_shape

# the book's layer-by-layer shapes for one 28x28 image (d2l §7.6.1)
BOOK_SHAPES = [("Conv2d", (1, 6, 28, 28)), ("Sigmoid", (1, 6, 28, 28)), ("AvgPool2d", (1, 6, 14, 14)),
               ("Conv2d", (1, 16, 10, 10)), ("Sigmoid", (1, 16, 10, 10)), ("AvgPool2d", (1, 16, 5, 5)),
               ("Flatten", (1, 400)), ("Linear", (1, 120)), ("Sigmoid", (1, 120)), ("Linear", (1, 84)),
               ("Sigmoid", (1, 84)), ("Linear", (1, 10))]


def weighted_layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def xavier_mismatch(weight):
    """Why `weight` does not look drawn from Xavier-uniform U(-a, a), a = sqrt(6 / (fan_in + fan_out)); '' if it does.

    PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), differs in bound and variance for every LeNet layer.
    """
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    bound, variance = math.sqrt(6 / (fan_in + fan_out)), 2 / (fan_in + fan_out)
    largest, ratio = weight.abs().max().item(), weight.var().item() / variance
    if not 0.9 * bound < largest <= bound:
        return f"largest |w| {largest:.4f}, Xavier bound {bound:.4f}"
    if not 0.8 < ratio < 1.2:
        return f"variance {ratio:.2f} x Xavier's"
    return ""


def test_layers_have_the_books_shapes():
    model = get_model("lenet")
    X = torch.rand(1, 1, 28, 28)
    shapes = []
    with torch.no_grad():
        for layer in model.net:
            X = layer(X)
            shapes.append((type(layer).__name__, tuple(X.shape)))
    assert shapes == BOOK_SHAPES
    assert conv_output_shape(28, 5, padding=2) == (28, 28) and conv_output_shape(14, 5) == (10, 10)
    assert conv_output_shape(28, 2, stride=2) == (14, 14) and conv_output_shape(10, 2, stride=2) == (5, 5)


def test_xavier_init_is_applied_after_the_lazy_layers_materialise():
    torch.manual_seed(0)
    model = get_model("lenet")
    layers = weighted_layers(model)
    assert len(layers) == 5
    assert {i: xavier_mismatch(m.weight) for i, m in enumerate(layers) if xavier_mismatch(m.weight)} == {}

    # the book's pitfall: initialising before the lazy layers have shapes leaves PyTorch's default, which the
    # check above tells apart, layer by layer
    torch.manual_seed(0)
    book_pitfall = LeNet()
    book_pitfall(torch.rand(2, 1, 28, 28))  # materialised, never initialised
    assert all(xavier_mismatch(m.weight) for m in weighted_layers(book_pitfall))


def test_init_weights_refuses_unmaterialised_layers():
    with pytest.raises(RuntimeError, match="materialize"):
        LeNet().init_weights()


def test_built_model_has_no_lazy_layers_left():
    """After materialisation the lazy layers became plain Conv2d/Linear: no shape-inference hook runs per step."""
    model = get_model("lenet")
    assert not any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_convolutions_run_channels_last_and_compute_the_same_as_nchw():
    torch.manual_seed(0)
    model = get_model("lenet").eval()
    seen = []
    for i in (0, 3):
        model.net[i].register_forward_hook(lambda module, args, out: seen.append(out))
    X = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        fast = model(X)
        assert all(out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous() for out in seen)
        reference = model.net(X)  # the plain NCHW computation
    assert seen[-1].is_contiguous()  # the second call's activations were NCHW: the check above can fail
    assert torch.allclose(fast, reference, atol=1e-5)


def test_gradients_equal_the_nchw_ones():
    torch.manual_seed(0)
    model = get_model("lenet")
    X, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    fast = torch.autograd.grad(model.loss(model(X), y), list(model.parameters()))
    plain = torch.autograd.grad(model.loss(model.net(X), y), list(model.parameters()))
    for a, b in zip(fast, plain):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.data
@pytest.mark.slow  # two minutes on two cores: run with -m slow
def test_book_recipe_reaches_the_accuracy_of_the_books_code():
    """The book preset (lr 0.1, batch 128, 10 epochs, Xavier) on real Fashion-MNIST.

    Sigmoid LeNet sits on a plateau (loss 2.30, accuracy 0.10) for its first two or three epochs, then climbs: with
    seed 0 it ends at 0.731 validation accuracy, and the book's own d2l 1.0.3 code, same seed and machine, at 0.727
    (seed 1: 0.716). 0.70 is that figure less a margin for other seeds and thread counts.
    """
    require_data("fashion-mnist")
    torch.manual_seed(0)
    model, data = get_model("lenet", preset="book"), get_data("lenet", preset="book")
    result = Trainer(max_epochs=10, device="cpu", progress=False, log=lambda line: None).fit(model, data)
    assert result.examples == 10 * 60_000
    assert result.metrics["val_acc"] >= 0.70, (result.metrics, f"{result.examples_per_s:.0f} examples/s")
