"""Tied parameters (d2l §6.2.3): one parameter set, gradients summed over uses, stored once, loaded into both uses."""

from __future__ import annotations

import safetensors
import torch
import torch.nn.functional as F
from torch import nn

from zoo_core import build_model, get_model, get_spec, load_weights, save_weights


def test_the_shared_layer_is_one_parameter_set():
    model = get_model("tied-mlp", preset="book")
    net = model.net
    assert net[2] is net[4]
    assert len(list(model.parameters())) == 6  # 3 layers x (weight, bias): the shared layer counted once
    assert model.num_params() == 20 * 8 + 8 + 8 * 8 + 8 + 8 * 1 + 1 == 249
    with torch.no_grad():
        net[2].weight[0, 0] = 100.0
    assert net[4].weight[0, 0] == 100.0  # the same object, not a copy


def test_gradient_of_the_shared_layer_is_the_sum_of_both_uses():
    torch.manual_seed(0)
    model = get_model("tied-mlp", preset="tiny")
    X, y = torch.rand(5, 20), torch.rand(5, 1)
    model.loss(model(X), y).backward()
    # by hand: the same computation with two separate copies of the shared weights, one per use
    first, shared, last = model.net[0], model.net[2], model.net[6]
    W1, b1 = shared.weight.detach().clone().requires_grad_(), shared.bias.detach().clone().requires_grad_()
    W2, b2 = shared.weight.detach().clone().requires_grad_(), shared.bias.detach().clone().requires_grad_()
    h = F.relu(first(X).detach())
    h = F.relu(F.linear(h, W1, b1))
    h = F.relu(F.linear(h, W2, b2))
    F.mse_loss(last(h), y).backward()
    assert torch.allclose(shared.weight.grad, W1.grad + W2.grad, atol=1e-7)
    assert torch.allclose(shared.bias.grad, b1.grad + b2.grad, atol=1e-7)
    assert not torch.allclose(W1.grad, W2.grad)  # two genuinely different contributions


def test_safetensors_holds_one_tensor_that_loads_back_into_both_uses(tmp_path):
    model = get_model("tied-mlp", preset="tiny")
    save_weights(model, tmp_path / "model.safetensors")
    with safetensors.safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert keys == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.6.weight", "net.6.bias"}
    other = build_model(get_spec("tied-mlp"), model.hparams)
    assert not torch.equal(other.net[2].weight, model.net[2].weight)
    missing, unexpected = load_weights(other, tmp_path / "model.safetensors")
    assert (missing, unexpected) == ([], [])
    assert other.net[2] is other.net[4]  # still tied after loading...
    assert torch.equal(other.net[4].weight, model.net[2].weight)  # ...and both uses have the saved values
    X = torch.rand(3, 20)
    assert torch.equal(other(X), model(X))
    # training the loaded model moves both uses together
    other.loss(other(X), torch.zeros(3, 1)).backward()
    torch.optim.SGD(other.parameters(), lr=0.1).step()
    assert torch.equal(other.net[2].weight, other.net[4].weight)


def test_tied_repeat_model_trains_one_block():
    model = get_model("repeat-mlp", preset="tiny", tied=True, num_blocks=3)
    untied = get_model("repeat-mlp", preset="tiny", num_blocks=3)
    block = 16 * 16 + 16
    assert untied.num_params() - model.num_params() == 2 * block
    assert isinstance(model.net[2].blocks[0][0], nn.Linear)
    assert model.net[2].blocks[0] is model.net[2].blocks[2]
