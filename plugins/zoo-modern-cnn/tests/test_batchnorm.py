"""The from-scratch batch norm (d2l §8.5) behaves like PyTorch's: buffers, mode switch, momentum, outputs, export."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from zoo_core import check_parity, export_onnx, get_model, get_spec
from zoo_modern_cnn import BatchNorm, BNLeNet, BNLeNetScratch

SHAPES = {4: (8, 3, 5, 5), 2: (8, 7)}  # after a conv (channels 3) / after a dense layer (features 7)


def pair(num_dims: int) -> tuple[BatchNorm, nn.Module]:
    features = SHAPES[num_dims][1]
    ours = BatchNorm(features, num_dims=num_dims)
    with torch.no_grad():  # non-trivial scale and shift, the same in both
        ours.gamma.uniform_(0.5, 2.0)
        ours.beta.uniform_(-1.0, 1.0)
    theirs = (nn.BatchNorm2d if num_dims == 4 else nn.BatchNorm1d)(features, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        theirs.weight.copy_(ours.gamma.flatten())
        theirs.bias.copy_(ours.beta.flatten())
    return ours, theirs


def test_moving_statistics_are_buffers():
    bn = BatchNorm(6, num_dims=4)
    assert {"moving_mean", "moving_var"} <= set(bn.state_dict())  # saved and loaded with the weights
    assert {name for name, _ in bn.named_parameters()} == {"gamma", "beta"}  # not trained by the optimiser
    bn.to(torch.float64)
    assert bn.moving_mean.dtype == bn.moving_var.dtype == torch.float64  # `.to()` moves and casts them
    bn.to("meta")
    assert bn.moving_mean.device.type == bn.moving_var.device.type == "meta"


@pytest.mark.parametrize("num_dims", [4, 2])
def test_training_mode_updates_statistics_with_momentum_0_1(num_dims):
    bn = BatchNorm(SHAPES[num_dims][1], num_dims=num_dims).train()
    X = torch.randn(SHAPES[num_dims]) * 3 + 2
    dims = (0, 2, 3) if num_dims == 4 else (0,)
    with torch.no_grad():  # the switch is model.training, not grad mode (the book's is_grad_enabled())
        bn(X)
    mean, var = X.mean(dim=dims, keepdim=True), X.var(dim=dims, keepdim=True, unbiased=True)
    torch.testing.assert_close(bn.moving_mean, 0.9 * torch.zeros_like(mean) + 0.1 * mean)
    torch.testing.assert_close(bn.moving_var, 0.9 * torch.ones_like(var) + 0.1 * var)


def test_eval_mode_uses_and_keeps_the_statistics():
    bn = BatchNorm(3, num_dims=4).train()
    bn(torch.randn(8, 3, 5, 5) + 1)
    mean, var = bn.moving_mean.clone(), bn.moving_var.clone()
    bn.eval()
    X = torch.randn(8, 3, 5, 5)
    Y = bn(X)
    assert torch.equal(bn.moving_mean, mean) and torch.equal(bn.moving_var, var)
    torch.testing.assert_close(Y, (X - mean) / torch.sqrt(var + 1e-5))


@pytest.mark.parametrize("num_dims", [4, 2])
def test_matches_torch_batchnorm_in_train_and_eval_mode(num_dims):
    torch.manual_seed(0)
    ours, theirs = pair(num_dims)
    for step in range(3):  # training: batch statistics, and the same moving averages
        X = torch.randn(SHAPES[num_dims]) * (step + 1) + step
        torch.testing.assert_close(ours(X), theirs(X))
    torch.testing.assert_close(ours.moving_mean.flatten(), theirs.running_mean)
    torch.testing.assert_close(ours.moving_var.flatten(), theirs.running_var)
    ours.eval(), theirs.eval()
    X = torch.randn(SHAPES[num_dims])
    torch.testing.assert_close(ours(X), theirs(X))


def test_gradients_match_torch_batchnorm():
    torch.manual_seed(0)
    ours, theirs = pair(4)
    X = torch.randn(SHAPES[4], requires_grad=True)
    (gx_ours, gg_ours) = torch.autograd.grad(ours(X).square().sum(), (X, ours.gamma))
    (gx_theirs, gg_theirs) = torch.autograd.grad(theirs(X).square().sum(), (X, theirs.weight))
    torch.testing.assert_close(gx_ours, gx_theirs)
    torch.testing.assert_close(gg_ours.flatten(), gg_theirs)


def test_low_precision_inputs_keep_float32_statistics():
    bn = BatchNorm(3, num_dims=4).train()
    Y = bn(torch.randn(8, 3, 5, 5).bfloat16())
    assert Y.dtype == torch.bfloat16
    assert bn.moving_mean.dtype == bn.moving_var.dtype == torch.float32


def test_scratch_lenet_equals_concise_lenet():
    """With the same conv/dense weights, BNLeNetScratch and BNLeNet agree in training (3 batches) and in eval."""
    torch.manual_seed(0)
    scratch, concise = BNLeNetScratch().materialize(), BNLeNet().materialize()
    for a, b in zip(scratch.net, concise.net):
        if isinstance(a, (nn.Conv2d, nn.Linear)):
            b.load_state_dict(a.state_dict())
    scratch.train(), concise.train()
    for _ in range(3):
        X = torch.rand(16, 1, 28, 28)
        torch.testing.assert_close(scratch(X), concise(X))
    scratch.eval(), concise.eval()
    X = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(scratch(X), concise(X))


def test_trained_statistics_are_exported(tmp_path):
    """After training steps move the statistics, the ONNX file holds them (as constants) and matches eval mode."""
    torch.manual_seed(0)
    model = get_model("bn-lenet-scratch", preset="tiny").train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 1, 28, 28) * 2)
    inputs, outputs = get_spec("bn-lenet-scratch").io("tiny")
    export_onnx(model, tmp_path / "model.onnx", inputs, outputs)
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(tmp_path / "model.onnx").graph.initializer}
    norms = {name: m for name, m in model.net.named_children() if isinstance(m, BatchNorm)}
    assert len(norms) == 4
    for name, bn in norms.items():
        assert not torch.equal(bn.moving_mean, torch.zeros_like(bn.moving_mean))  # training moved them
        torch.testing.assert_close(torch.tensor(initializers[f"net.{name}.moving_mean"]), bn.moving_mean)
    result = check_parity(model, tmp_path / "model.onnx", (torch.rand(5, 1, 28, 28),))
    assert result.passed, str(result)
