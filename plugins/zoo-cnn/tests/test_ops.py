"""The from-scratch operations of chapter 7 agree with the book's worked examples and with PyTorch's own kernels."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo_cnn import (
    Conv2D, conv_output_shape, corr2d, corr2d_multi_in, corr2d_multi_in_out, corr2d_multi_in_out_1x1, pool2d,
)


def torch_corr2d(X, K):  # PyTorch's conv2d is a cross-correlation too
    return F.conv2d(X[None, None], K[None, None])[0, 0]


# --- corr2d ----------------------------------------------------------------------------------------------------------

def test_corr2d_book_example():
    X = torch.arange(9.0).reshape(3, 3)
    K = torch.arange(4.0).reshape(2, 2)
    assert torch.equal(corr2d(X, K), torch.tensor([[19.0, 25.0], [37.0, 43.0]]))


@pytest.mark.parametrize("image, kernel", [((3, 3), (2, 2)), ((6, 8), (1, 2)), ((7, 5), (3, 2)), ((9, 9), (5, 5)),
                                           ((4, 6), (4, 1)), ((5, 5), (5, 5))])
def test_corr2d_matches_conv2d(image, kernel):
    torch.manual_seed(0)
    X, K = torch.randn(image), torch.randn(kernel)
    assert torch.allclose(corr2d(X, K), torch_corr2d(X, K), atol=1e-5)


def test_corr2d_gradients_match_conv2d():
    torch.manual_seed(0)
    X, K = torch.randn(7, 9, requires_grad=True), torch.randn(3, 2, requires_grad=True)
    G = torch.randn(5, 8)
    ours = torch.autograd.grad((corr2d(X, K) * G).sum(), (X, K))
    theirs = torch.autograd.grad((torch_corr2d(X, K) * G).sum(), (X, K))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-5)


def test_corr2d_takes_leading_batch_dimensions():
    torch.manual_seed(0)
    X, K = torch.randn(4, 3, 8, 8), torch.randn(3, 3)
    batched = corr2d(X, K)
    assert batched.shape == (4, 3, 6, 6)
    assert torch.allclose(batched[2, 1], corr2d(X[2, 1], K))


def test_corr2d_detects_vertical_edges_only():
    """The book's §7.2.3 example: [[1, -1]] marks white-to-black with 1 and black-to-white with -1."""
    X = torch.ones(6, 8)
    X[:, 2:6] = 0
    Y = corr2d(X, torch.tensor([[1.0, -1.0]]))
    expected = torch.zeros(6, 7)
    expected[:, 1], expected[:, 5] = 1, -1
    assert torch.equal(Y, expected)
    assert torch.equal(corr2d(X.t(), torch.tensor([[1.0, -1.0]])), torch.zeros(8, 5))  # horizontal: nothing


def test_corr2d_rejects_a_kernel_larger_than_the_input():
    with pytest.raises(ValueError, match="does not fit"):
        corr2d(torch.ones(3, 3), torch.ones(4, 1))


# --- channels ---------------------------------------------------------------------------------------------------------

BOOK_X = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
                       [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
BOOK_K = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])


def test_corr2d_multi_in_book_example():
    assert torch.equal(corr2d_multi_in(BOOK_X, BOOK_K), torch.tensor([[56.0, 72.0], [104.0, 120.0]]))


def test_corr2d_multi_in_out_book_example():
    K = torch.stack((BOOK_K, BOOK_K + 1, BOOK_K + 2), 0)
    assert K.shape == (3, 2, 2, 2)
    expected = torch.tensor([[[56.0, 72.0], [104.0, 120.0]], [[76.0, 100.0], [148.0, 172.0]],
                             [[96.0, 128.0], [192.0, 224.0]]])
    assert torch.equal(corr2d_multi_in_out(BOOK_X, K), expected)


def test_multi_channel_correlations_match_conv2d():
    torch.manual_seed(0)
    X, K = torch.randn(3, 7, 6), torch.randn(4, 3, 3, 2)
    expected = F.conv2d(X[None], K)[0]
    assert torch.allclose(corr2d_multi_in_out(X, K), expected, atol=1e-5)
    assert torch.allclose(corr2d_multi_in(X, K[1]), expected[1], atol=1e-5)


def test_corr2d_multi_in_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="channels"):
        corr2d_multi_in(torch.ones(3, 4, 4), torch.ones(2, 2, 2))


def test_1x1_convolution_is_a_matrix_product_equal_to_the_general_one():
    torch.manual_seed(0)
    X, K = torch.normal(0, 1, (3, 3, 3)), torch.normal(0, 1, (2, 3, 1, 1))
    Y1 = corr2d_multi_in_out_1x1(X, K)
    assert Y1.shape == (2, 3, 3)
    assert float(torch.abs(Y1 - corr2d_multi_in_out(X, K)).sum()) < 1e-6  # the book's check
    assert torch.allclose(Y1, F.conv2d(X[None], K)[0], atol=1e-6)


# --- pooling ----------------------------------------------------------------------------------------------------------

def test_pool2d_book_examples():
    X = torch.arange(9.0).reshape(3, 3)
    assert torch.equal(pool2d(X, (2, 2)), torch.tensor([[4.0, 5.0], [7.0, 8.0]]))
    assert torch.equal(pool2d(X, (2, 2), "avg"), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))


@pytest.mark.parametrize("pool_size", [1, 2, 3, (2, 3), (3, 1)])
def test_pool2d_matches_torch(pool_size):
    torch.manual_seed(0)
    X = torch.randn(2, 3, 7, 8)
    assert torch.equal(pool2d(X, pool_size, "max"), F.max_pool2d(X, pool_size, stride=1))
    assert torch.allclose(pool2d(X, pool_size, "avg"), F.avg_pool2d(X, pool_size, stride=1), atol=1e-6)


def test_pool2d_rejects_unknown_modes_and_oversized_windows():
    with pytest.raises(ValueError, match="mode"):
        pool2d(torch.ones(3, 3), 2, "median")
    with pytest.raises(ValueError, match="does not fit"):
        pool2d(torch.ones(3, 3), (4, 1))


# --- the Conv2D layer -------------------------------------------------------------------------------------------------

def test_conv2d_layer_is_corr2d_plus_a_learnable_bias():
    torch.manual_seed(0)
    layer = Conv2D((1, 2))
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight.shape == (1, 2) and torch.equal(layer.bias, torch.zeros(1))
    assert ((0 <= layer.weight) & (layer.weight < 1)).all()  # the book's torch.rand initialisation
    with torch.no_grad():
        layer.bias.fill_(0.5)
    X = torch.randn(6, 8)
    assert torch.allclose(layer(X), torch_corr2d(X, layer.weight.detach()) + 0.5, atol=1e-6)


def test_conv2d_layer_gradients_match_nn_conv2d():
    torch.manual_seed(0)
    ours = Conv2D(3)
    theirs = nn.Conv2d(1, 1, 3)
    with torch.no_grad():
        theirs.weight.copy_(ours.weight[None, None])
        theirs.bias.copy_(ours.bias)
    X = torch.randn(8, 7)
    (ours(X) ** 2).sum().backward()
    (theirs(X[None, None]) ** 2).sum().backward()
    assert torch.allclose(ours.weight.grad, theirs.weight.grad[0, 0], atol=1e-4)
    assert torch.allclose(ours.bias.grad, theirs.bias.grad, atol=1e-4)


# --- output shapes ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (dict(input_size=8, kernel_size=3, padding=1), (8, 8)),                                    # §7.3.1
    (dict(input_size=8, kernel_size=(5, 3), padding=(2, 1)), (8, 8)),                          # §7.3.1
    (dict(input_size=8, kernel_size=3, padding=1, stride=2), (4, 4)),                          # §7.3.2
    (dict(input_size=8, kernel_size=(3, 5), padding=(0, 1), stride=(3, 4)), (2, 2)),           # §7.3.2
    (dict(input_size=28, kernel_size=5, padding=2), (28, 28)),                                 # LeNet's first conv
])
def test_conv_output_shape_book_examples(args, expected):
    assert conv_output_shape(**args) == expected


def test_conv_output_shape_matches_conv2d_over_many_configurations(monkeypatch):
    """Every combination below, against what PyTorch's convolution really outputs (or refuses to compute)."""
    sizes, kernels, paddings, strides, dilations = [1, 2, 5, 8, 13, (9, 4)], [1, 2, 3, 5, (3, 1)], [0, 1, 2, (2, 0)], \
        [1, 2, 3, (1, 3)], [1, 2, (3, 1)]
    checked = rejected = 0
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # same shapes, no oneDNN kernel built per config
    for n, k, p, s, d in itertools.product(sizes, kernels, paddings, strides, dilations):
        X = torch.zeros(1, 1, *((n, n) if isinstance(n, int) else n))
        K = torch.zeros(1, 1, *((k, k) if isinstance(k, int) else k))
        try:
            predicted = conv_output_shape(n, k, p, s, d)
        except ValueError:
            with pytest.raises(RuntimeError):
                F.conv2d(X, K, stride=s, padding=p, dilation=d)
            rejected += 1
            continue
        assert tuple(F.conv2d(X, K, stride=s, padding=p, dilation=d).shape[-2:]) == predicted, (n, k, p, s, d)
        checked += 1
    assert checked > 900 and rejected > 50  # both branches really ran


def test_conv_output_shape_rejects_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        conv_output_shape(8, 3, stride=0)
    with pytest.raises(ValueError, match="pair"):
        conv_output_shape(8, (3, 3, 3))
