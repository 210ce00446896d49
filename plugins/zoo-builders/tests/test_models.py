"""The registered models and their data: seeded data of the declared shapes, the repeat modes, the public API."""

from __future__ import annotations

import inspect

import pytest
import torch

import zoo_builders

from zoo_builders.data import BuildersData
from zoo_core import get_data, get_data_spec, get_model, list_models


def test_data_is_seeded_and_shaped():
    a, b = BuildersData(num_train=50, num_val=10, seed=3).load(), BuildersData(num_train=50, num_val=10, seed=3).load()
    assert all(torch.equal(x, y) for x, y in zip(a["train"] + a["val"], b["train"] + b["val"]))
    X, y = a["train"]
    assert X.shape == (50, 20) and y.shape == (50, 10) and a["val"][0].shape == (10, 20)
    assert X.min() >= 0 and X.max() < 1  # the book's torch.rand inputs
    assert y.abs().max() < 1.1 and 0.2 < y.std() < 0.8
    other = BuildersData(num_train=50, num_val=10, seed=4).load()
    assert not torch.equal(other["train"][1], y)


def test_every_model_trains_on_the_plugins_dataset_with_matching_shapes():
    assert get_data_spec("builders-synthetic").plugin == "zoo-builders"
    specs = list_models(plugin="zoo-builders")
    assert sorted(s.name for s in specs) == sorted([
        "my-sequential", "fixed-hidden-mlp", "chimera", "parallel-mlp", "repeat-mlp", "tied-mlp", "centered-mlp",
        "my-linear-mlp", "tensor-reduction", "fourier-mlp"])
    for spec in specs:
        assert spec.dataset == "builders-synthetic" and spec.chapter == 6
        for preset in ("book", "tiny"):
            X, y = get_data(spec.name, preset=preset).example_batch(2)
            (inputs,), (outputs,) = spec.io(preset)
            assert X.shape[1:] == inputs.shape[1:] and y.shape[1:] == outputs.shape[1:]


@pytest.mark.parametrize("mode", ["sequential", "parallel-sum", "parallel-concat", "residual"])
def test_repeat_mlp_in_every_mode(mode):
    model = get_model("repeat-mlp", preset="tiny", mode=mode, num_blocks=3)
    assert model(torch.rand(3, 20)).shape == (3, 10)
    head_inputs = 3 * 16 if mode == "parallel-concat" else 16
    assert model.num_params() == (20 * 16 + 16) + 3 * (16 * 16 + 16) + (head_inputs * 10 + 10)


def test_the_public_api_is_exported_and_documented():
    assert sorted(set(zoo_builders.__all__)) == sorted(zoo_builders.__all__)
    for name in zoo_builders.__all__:
        value = getattr(zoo_builders, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"
    assert {"MySequential", "Parallel", "repeat", "init_mixture", "save_tensors", "load_submodule", "try_gpu",
            "try_all_gpus", "FourierCoefficients", "TensorReduction", "chimera"} <= set(zoo_builders.__all__)
