"""Chapter 7.2.4: the edge detector learns the book's kernel [1, -1] through the zoo's shared Trainer."""

from __future__ import annotations

import pytest
import torch

from zoo_core import Trainer, get_data, get_data_spec, get_model, get_spec
from zoo_cnn import corr2d, edge_image

TARGET = torch.tensor([[1.0, -1.0]])


def test_edge_image_is_the_books():
    X, Y = edge_image()
    assert X.shape == (6, 8) and Y.shape == (6, 7)
    assert torch.equal(X[:, 2:6], torch.zeros(6, 4)) and X.sum() == 6 * 4
    assert torch.equal(Y, corr2d(X, TARGET))
    assert torch.equal(Y[:, 1], torch.ones(6)) and torch.equal(Y[:, 5], -torch.ones(6)) and Y.abs().sum() == 12


def test_edge_dataset_is_registered_by_the_plugin_and_serves_the_one_pair():
    assert get_data_spec("edge-image").plugin == "zoo-cnn"
    data = get_data("edge-detector")
    X, Y = edge_image()
    for loader in (data.train_dataloader(), data.val_dataloader()):
        batches = list(loader)
        assert len(batches) == 1
        assert torch.equal(batches[0][0], X[None, None]) and torch.equal(batches[0][1], Y[None, None])


def test_loss_is_the_sum_of_squared_errors_not_the_mean():
    model = get_model("edge-detector")
    y = torch.zeros(1, 1, 6, 7)
    assert model.loss(y + 0.5, y).item() == pytest.approx(42 * 0.25)
    assert model.loss(torch.full((2, 1, 6, 7), 0.5), torch.zeros(2, 1, 6, 7)).item() == pytest.approx(2 * 42 * 0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_book_recipe_learns_the_edge_kernel_through_the_trainer(seed):
    """The book's 10 steps at lr 3e-2 from PyTorch's default initialisation: the kernel ends within 0.1 of [1, -1]."""
    spec = get_spec("edge-detector")
    torch.manual_seed(seed)
    model, data = get_model("edge-detector", preset="book"), get_data("edge-detector", preset="book")
    assert spec.preset("book").model["lr"] == 0.03
    start = model.kernel.clone()
    assert (start - TARGET).abs().max() > 0.25  # it really has something to learn
    result = Trainer(**spec.preset("book").train, device="cpu", seed=seed, progress=False,
                     log=lambda line: None).fit(model, data)
    assert result.steps == 10
    assert model.kernel.shape == (1, 2)
    assert (model.kernel - TARGET).abs().max() < 0.1, model.kernel
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
