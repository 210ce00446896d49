"""Chapter 5: the from-scratch pieces behave like PyTorch's, dropout is exact at its edges, and the book's recipes
reach the book's accuracy on real Fashion-MNIST."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo_core import Trainer, get_data, get_model
from zoo_core.testing import require_data
from zoo_mlp import DropoutMLPScratch, MLPScratch, dropout_layer, relu


def test_relu_is_torchs():
    X = torch.randn(100)
    assert torch.equal(relu(X), F.relu(X))


def test_dropout_edges_are_exact():
    X = torch.randn(64, 32)
    assert dropout_layer(X, 0.0) is X
    assert torch.equal(dropout_layer(X, 1.0), torch.zeros_like(X))
    with pytest.raises(ValueError, match="dropout"):
        dropout_layer(X, 1.5)


def test_dropout_zeroes_about_p_and_rescales_the_survivors():
    torch.manual_seed(0)
    X = torch.rand(200, 500) + 1  # no zeros of its own
    out = dropout_layer(X, 0.3)
    dropped = out == 0
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert torch.allclose(out[~dropped], X[~dropped] / 0.7)


def test_dropout_mask_lives_on_the_inputs_device():
    """The book draws the mask on the CPU; here it follows X (the meta device stands in for a GPU)."""
    X = torch.empty(4, 8, device="meta")
    assert dropout_layer(X, 0.5).device.type == "meta"


def test_scratch_dropout_only_in_training_mode():
    torch.manual_seed(0)
    model = get_model("dropout-mlp-scratch", preset="tiny")
    X = torch.rand(16, 1, 28, 28)
    model.eval()
    assert torch.equal(model(X), model(X))
    model.train()
    assert not torch.equal(model(X), model(X))
    no_dropout = DropoutMLPScratch(num_hiddens_1=32, num_hiddens_2=32, dropout_1=0.0, dropout_2=0.0).materialize()
    no_dropout.load_state_dict(model.state_dict())
    model.eval()
    assert torch.equal(no_dropout.train()(X), model(X))  # p = 0 in training is eval mode exactly


def test_scratch_mlp_matches_the_concise_one_with_the_same_weights():
    scratch, concise = get_model("mlp-scratch", preset="tiny"), get_model("mlp", preset="tiny")
    with torch.no_grad():
        concise.net[1].weight.copy_(scratch.W1.T)
        concise.net[1].bias.copy_(scratch.b1)
        concise.net[3].weight.copy_(scratch.W2.T)
        concise.net[3].bias.copy_(scratch.b2)
    X = torch.rand(5, 1, 28, 28)
    assert torch.allclose(scratch(X), concise(X), atol=1e-6)
    assert isinstance(scratch, MLPScratch) and scratch.W1.std().item() == pytest.approx(0.01, rel=0.1)


@pytest.mark.data
@pytest.mark.parametrize("name, target", [
    ("mlp-scratch", 0.84), ("mlp", 0.84),  # 15-20 s each on 2 idle cores
    pytest.param("dropout-mlp-scratch", 0.82, marks=pytest.mark.slow),  # 30-60 s each
    pytest.param("dropout-mlp", 0.82, marks=pytest.mark.slow)])
def test_book_recipe_reaches_the_books_accuracy(name, target):
    """The book preset (lr 0.1, batch 256, 10 epochs) on real Fashion-MNIST."""
    require_data("fashion-mnist")
    model, data = get_model(name, preset="book"), get_data(name, preset="book")
    result = Trainer(max_epochs=10, device="cpu", progress=False, log=lambda line: None).fit(model, data)
    assert result.metrics["val_acc"] >= target, result.metrics
