"""Chapter 4: the from-scratch softmax is numerically stable; both models reach the book's accuracy on real data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo_core import Trainer, get_data, get_model
from zoo_core.testing import require_data
from zoo_softmax.softmax import cross_entropy, log_softmax, softmax

EXTREME = torch.tensor([[1000.0, 0.0, -1000.0], [-50.0, 80.0, 3.0], [0.1, 0.2, 0.3]])


def test_softmax_is_stable_and_matches_torch():
    probs = softmax(EXTREME)
    assert torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    assert torch.allclose(probs, torch.softmax(EXTREME, -1))
    assert torch.allclose(log_softmax(EXTREME), torch.log_softmax(EXTREME, -1))
    naive = EXTREME.exp() / EXTREME.exp().sum(-1, keepdim=True)  # the book's version overflows: inf / inf
    assert torch.isnan(naive).any()


def test_cross_entropy_matches_torch_where_the_naive_one_is_infinite():
    y = torch.tensor([2, 0, 1])  # row 0's label has probability exp(-2000): -log underflows to inf naively
    assert torch.allclose(cross_entropy(EXTREME, y), F.cross_entropy(EXTREME, y))
    assert torch.isfinite(cross_entropy(EXTREME, y))
    assert torch.isinf(-torch.log(torch.softmax(EXTREME, -1)[0, 2]))


def test_scratch_gradients_match_the_concise_loss():
    O = torch.randn(5, 10, requires_grad=True)
    y = torch.randint(0, 10, (5,))
    (grad_ours,) = torch.autograd.grad(cross_entropy(O, y), O)
    (grad_torch,) = torch.autograd.grad(F.cross_entropy(O, y), O)
    assert torch.allclose(grad_ours, grad_torch, atol=1e-6)


@pytest.mark.data
@pytest.mark.parametrize("name", ["softmax-scratch", "softmax"])
def test_book_recipe_reaches_the_books_accuracy(name):
    """The book preset (lr 0.1, batch 256, 10 epochs) on real Fashion-MNIST: validation accuracy >= 0.82."""
    require_data("fashion-mnist")
    torch.manual_seed(0)
    model, data = get_model(name, preset="book"), get_data(name, preset="book")
    result = Trainer(max_epochs=10, device="cpu", progress=False, log=lambda line: None).fit(model, data)
    assert result.metrics["val_acc"] >= 0.82, result.metrics
    assert result.examples == 10 * 60_000
