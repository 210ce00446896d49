"""Each `book` preset builds exactly the book's network: its parameter count and its layer summary.

The figures are the book's own code run on d2l 1.0.3 (torch 2.14.1), as the book trains each model (its image size;
AlexNet, VGG and NiN at 224 px, GoogLeNet, ResNet-18, RegNetX-32 and DenseNet at 96 px, the LeNets at 28 px):

    cd plugins/zoo-modern-cnn && /tmp/d2l-ref-venv/bin/python tools/book_figures.py > tools/book_figures.json

(d2l 1.0.3 ships Residual, ResNeXtBlock and init_cnn; tools/book_figures.py holds the chapter's networks as the book
prints them.) The summary is the book's ``layer_summary``: for each top-level child of ``net``, its class name and
its output shape on a batch of one. The zoo's CI has no d2l, hence the hard-coded copy below.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from zoo_core import get_model, get_spec

# name: (parameters, image side, [(class, output shape) per top-level child of net]), from tools/book_figures.json
BOOK = {
    "alexnet": (46_764_746, 224, [
        ("Conv2d", (1, 96, 54, 54)), ("ReLU", (1, 96, 54, 54)), ("MaxPool2d", (1, 96, 26, 26)),
        ("Conv2d", (1, 256, 26, 26)), ("ReLU", (1, 256, 26, 26)), ("MaxPool2d", (1, 256, 12, 12)),
        ("Conv2d", (1, 384, 12, 12)), ("ReLU", (1, 384, 12, 12)), ("Conv2d", (1, 384, 12, 12)),
        ("ReLU", (1, 384, 12, 12)), ("Conv2d", (1, 256, 12, 12)), ("ReLU", (1, 256, 12, 12)),
        ("MaxPool2d", (1, 256, 5, 5)), ("Flatten", (1, 6400)), ("Linear", (1, 4096)), ("ReLU", (1, 4096)),
        ("Dropout", (1, 4096)), ("Linear", (1, 4096)), ("ReLU", (1, 4096)), ("Dropout", (1, 4096)),
        ("Linear", (1, 10)),
    ]),
    "vgg": (43_093_322, 224, [
        ("Sequential", (1, 16, 112, 112)), ("Sequential", (1, 32, 56, 56)), ("Sequential", (1, 64, 28, 28)),
        ("Sequential", (1, 128, 14, 14)), ("Sequential", (1, 128, 7, 7)), ("Flatten", (1, 6272)),
        ("Linear", (1, 4096)), ("ReLU", (1, 4096)), ("Dropout", (1, 4096)), ("Linear", (1, 4096)),
        ("ReLU", (1, 4096)), ("Dropout", (1, 4096)), ("Linear", (1, 10)),
    ]),
    "nin": (1_992_166, 224, [
        ("Sequential", (1, 96, 54, 54)), ("MaxPool2d", (1, 96, 26, 26)), ("Sequential", (1, 256, 26, 26)),
        ("MaxPool2d", (1, 256, 12, 12)), ("Sequential", (1, 384, 12, 12)), ("MaxPool2d", (1, 384, 5, 5)),
        ("Dropout", (1, 384, 5, 5)), ("Sequential", (1, 10, 5, 5)), ("AdaptiveAvgPool2d", (1, 10, 1, 1)),
        ("Flatten", (1, 10)),
    ]),
    "googlenet": (5_977_530, 96, [
        ("Sequential", (1, 64, 24, 24)), ("Sequential", (1, 192, 12, 12)), ("Sequential", (1, 480, 6, 6)),
        ("Sequential", (1, 832, 3, 3)), ("Sequential", (1, 1024)), ("Linear", (1, 10)),
    ]),
    "bn-lenet-scratch": (44_878, 28, [
        ("Conv2d", (1, 6, 24, 24)), ("BatchNorm", (1, 6, 24, 24)), ("Sigmoid", (1, 6, 24, 24)),
        ("AvgPool2d", (1, 6, 12, 12)), ("Conv2d", (1, 16, 8, 8)), ("BatchNorm", (1, 16, 8, 8)),
        ("Sigmoid", (1, 16, 8, 8)), ("AvgPool2d", (1, 16, 4, 4)), ("Flatten", (1, 256)), ("Linear", (1, 120)),
        ("BatchNorm", (1, 120)), ("Sigmoid", (1, 120)), ("Linear", (1, 84)), ("BatchNorm", (1, 84)),
        ("Sigmoid", (1, 84)), ("Linear", (1, 10)),
    ]),
    "bn-lenet": (44_878, 28, [
        ("Conv2d", (1, 6, 24, 24)), ("BatchNorm2d", (1, 6, 24, 24)), ("Sigmoid", (1, 6, 24, 24)),
        ("AvgPool2d", (1, 6, 12, 12)), ("Conv2d", (1, 16, 8, 8)), ("BatchNorm2d", (1, 16, 8, 8)),
        ("Sigmoid", (1, 16, 8, 8)), ("AvgPool2d", (1, 16, 4, 4)), ("Flatten", (1, 256)), ("Linear", (1, 120)),
        ("BatchNorm1d", (1, 120)), ("Sigmoid", (1, 120)), ("Linear", (1, 84)), ("BatchNorm1d", (1, 84)),
        ("Sigmoid", (1, 84)), ("Linear", (1, 10)),
    ]),
    "resnet18": (11_178_378, 96, [
        ("Sequential", (1, 64, 24, 24)), ("Sequential", (1, 64, 24, 24)), ("Sequential", (1, 128, 12, 12)),
        ("Sequential", (1, 256, 6, 6)), ("Sequential", (1, 512, 3, 3)), ("Sequential", (1, 10)),
    ]),
    "regnetx32": (179_290, 96, [
        ("Sequential", (1, 32, 48, 48)), ("Sequential", (1, 32, 24, 24)), ("Sequential", (1, 80, 12, 12)),
        ("Sequential", (1, 10)),
    ]),
    "densenet": (758_226, 96, [
        ("Sequential", (1, 64, 24, 24)), ("DenseBlock", (1, 192, 24, 24)), ("Sequential", (1, 96, 12, 12)),
        ("DenseBlock", (1, 224, 12, 12)), ("Sequential", (1, 112, 6, 6)), ("DenseBlock", (1, 240, 6, 6)),
        ("Sequential", (1, 120, 3, 3)), ("DenseBlock", (1, 248, 3, 3)), ("Sequential", (1, 10)),
    ]),
}


@pytest.fixture(scope="module", params=list(BOOK))
def book_model(request):
    """Each model built with its book preset, once for all the tests of this module."""
    return request.param, get_model(request.param, preset="book").eval()


def test_parameter_count_is_the_books(book_model):
    name, model = book_model
    num_params, _, _ = BOOK[name]
    assert model.num_params() == num_params
    assert get_spec(name).preset("book").num_params == num_params  # what `zoo info` shows


def test_layer_shapes_are_the_books(book_model):
    """`Model.layer_summary` (what `zoo info NAME --layers` prints) gives the book's layers and shapes."""
    name, model = book_model
    _, size, layers = BOOK[name]
    assert model.image_size == size
    assert [(kind, tuple(shape)) for _, kind, shape in model.layer_summary()] == layers


def test_zoo_info_layers_prints_the_books_summary():
    from zoo_core.cli import cli

    result = CliRunner().invoke(cli, ["info", "regnetx32", "--layers", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == ["0", "stage1", "stage2", "head"]  # the book's child names
    assert [(r["layer"], tuple(r["output_shape"])) for r in rows] == BOOK["regnetx32"][2]


def test_book_recipes():
    """The book's training recipe per model: learning rate, image size, batch 128, 10 epochs (d2l 1.0, §8.1-8.8)."""
    recipes = {"alexnet": (0.01, 224), "vgg": (0.01, 224), "nin": (0.05, 224), "googlenet": (0.01, 96),
               "bn-lenet-scratch": (0.1, None), "bn-lenet": (0.1, None), "resnet18": (0.01, 96),
               "regnetx32": (0.05, 96), "densenet": (0.01, 96)}
    for name, (lr, resize) in recipes.items():
        book = get_spec(name).preset("book")
        assert book.model["lr"] == lr, name
        assert book.data.get("resize") == resize, name
        assert book.data["batch_size"] == 128 and book.train["max_epochs"] == 10, name
