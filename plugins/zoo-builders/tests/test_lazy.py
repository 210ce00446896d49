"""Lazy layers (d2l §6.4): shapes from the example batch, clear errors on a wrong size, info and export still work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo_builders import InputSizeError, find_input_size_error, is_lazy, mark_lazy
from zoo_core import ZooError, get_model, load_weights
from zoo_core.cli import main


def test_lazy_model_is_materialised_by_the_zoo():
    model = get_model("my-sequential", preset="book")
    assert not is_lazy(model)
    assert [tuple(p.shape) for p in model.parameters()] == [(256, 20), (256,), (10, 256), (10,)]


def test_a_wrong_input_size_names_the_layer_and_both_shapes():
    model = get_model("my-sequential", preset="tiny").train()
    with pytest.raises(InputSizeError) as info:
        model(torch.rand(2, 10))
    assert str(info.value) == ("layer net.0 (LazyLinear -> Linear) expects inputs of size 20 in the last dimension, "
                               "got shape (2, 10)")
    assert isinstance(info.value, ZooError) and isinstance(info.value.__cause__, RuntimeError)
    assert model.training  # the diagnosis ran in eval mode and put the mode back
    # the layer used twice in FixedHiddenMLP, and the second branch of a Parallel
    with pytest.raises(InputSizeError, match=r"^layer net.linear \(LazyLinear -> Linear\) expects inputs of size 20"):
        get_model("fixed-hidden-mlp", preset="tiny")(torch.rand(3, 7))
    with pytest.raises(InputSizeError, match=r"^layer net.0.blocks.0.0 .* got shape \(1, 21\)"):
        get_model("parallel-mlp", preset="tiny")(torch.rand(1, 21))


def test_other_errors_are_left_alone():
    model = get_model("my-sequential", preset="tiny")
    with pytest.raises(RuntimeError, match="dtype") as info:
        model(torch.rand(2, 20, dtype=torch.float64))
    assert not isinstance(info.value, InputSizeError)


def test_any_module_can_be_diagnosed_conv_layers_too():
    net = mark_lazy(nn.Sequential(nn.LazyConv2d(6, 5), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10)))
    assert is_lazy(net)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert not is_lazy(net)
    assert find_input_size_error(net, torch.rand(2, 1, 28, 28)) is None
    error = find_input_size_error(net, torch.rand(2, 3, 28, 28))
    assert str(error) == ("layer 0 (LazyConv2d -> Conv2d) expects inputs with 1 channels in dimension 1, got shape "
                          "(2, 3, 28, 28)")
    error = find_input_size_error(net, torch.rand(2, 1, 32, 32))  # the conv fits, the linear layer after it not
    assert str(error).startswith("layer 3 (LazyLinear -> Linear) expects inputs of size 3456 in the last dimension")
    assert all(not layer._forward_pre_hooks for layer in net)  # the diagnosis hooks are gone


def test_the_check_costs_nothing_while_inputs_fit(monkeypatch):
    """No hook on any layer (nn.Module's fast call path stays), no diagnosis run, identical outputs."""
    import zoo_builders.lazy

    model = get_model("repeat-mlp", preset="tiny")
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    monkeypatch.setattr(zoo_builders.lazy, "find_input_size_error", lambda *a, **k: pytest.fail("diagnosed"))
    X = torch.rand(4, 20)
    assert torch.equal(model(X), model.net(X))
    assert torch.equal(model.training_step((X, torch.zeros(4, 10)))["loss"], ((model.net(X)) ** 2).mean())


def test_zoo_info_and_layers_of_a_lazy_model(capsys):
    with pytest.raises(SystemExit) as code:
        main(["info", "tied-mlp", "--json"])
    assert code.value.code == 0
    card = json.loads(capsys.readouterr().out)
    assert card["presets"]["book"]["num_params"] == 249 and card["inputs"][0]["shape"] == ["batch", 20]
    with pytest.raises(SystemExit) as code:
        main(["info", "tied-mlp", "--layers", "--preset", "book", "--json"])
    assert code.value.code == 0
    layers = json.loads(capsys.readouterr().out)
    assert [row["output_shape"] for row in layers][-1] == [1, 1]
    assert [row["layer"] for row in layers][:3] == ["Linear", "ReLU", "Linear"]  # materialised: no Lazy left


def test_zoo_train_a_lazy_model(tmp_path, capsys):
    """``zoo train`` on a lazy model: a finished run with its weights (the contract exports every model to ONNX)."""
    with pytest.raises(SystemExit) as code:
        main(["train", "tied-mlp", "--preset", "tiny", "--device", "cpu", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert code.value.code == 0, out.err
    run_dir = Path(out.out.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "tied-mlp"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["hparams"]["num_hiddens"] == 8
    model = get_model("tied-mlp", preset="tiny")
    load_weights(model, run_dir / "model.safetensors")
    assert model.net[2] is model.net[4]
