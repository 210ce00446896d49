"""The chapter's building blocks: output shapes and channel bookkeeping (the book's own examples where it has them),
and the behaviour that makes each block what it is."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo_modern_cnn
from zoo_builders import Parallel
from zoo_modern_cnn import (DenseBlock, Inception, Residual, ResNeXtBlock, conv_block, nin_block, transition_block,
                            vgg_block)


def convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def test_vgg_block_halves_the_side_with_its_convolutions():
    blk = vgg_block(2, 16)
    assert blk(torch.rand(2, 3, 32, 32)).shape == (2, 16, 16, 16)
    assert [(c.kernel_size, c.padding) for c in convs(blk)] == [((3, 3), (1, 1))] * 2
    assert isinstance(blk[-1], nn.MaxPool2d)


@torch.no_grad()
def test_nin_block_is_a_conv_then_two_pixelwise_ones():
    blk = nin_block(96, kernel_size=11, strides=4, padding=0)
    assert blk(torch.rand(1, 1, 224, 224)).shape == (1, 96, 54, 54)
    assert [c.kernel_size for c in convs(blk)] == [(11, 11), (1, 1), (1, 1)]


@torch.no_grad()
def test_inception_concatenates_its_four_branches():
    """The book's first Inception block (stage 3): 64 + 128 + 32 + 32 = 256 channels, height and width kept."""
    blk = Inception(64, (96, 128), (16, 32), 32)
    assert isinstance(blk, Parallel) and len(blk.blocks) == 4  # built on zoo_builders.Parallel (d2l §6.1)
    X = torch.rand(2, 192, 12, 12)
    Y = blk(X)
    assert Y.shape == (2, 64 + 128 + 32 + 32, 12, 12)
    # the channels are the branches' outputs, in order
    torch.testing.assert_close(Y, torch.cat([branch(X) for branch in blk.blocks], dim=1))
    assert Inception(384, (192, 384), (48, 128), 128)(torch.rand(1, 832, 3, 3)).shape == (1, 1024, 3, 3)


@torch.no_grad()
def test_residual_keeps_shape_or_changes_it_through_a_1x1_conv():
    """The book's examples: (4, 3, 6, 6) stays; with a 1x1 conv and stride 2, 6 channels at half the side."""
    X = torch.rand(4, 3, 6, 6)
    assert Residual(3)(X).shape == (4, 3, 6, 6)
    blk = Residual(6, use_1x1conv=True, strides=2)
    assert blk(X).shape == (4, 6, 3, 3)
    assert blk.conv3.kernel_size == (1, 1) and blk.conv3.stride == (2, 2)
    with pytest.raises(RuntimeError):  # without the 1x1 conv, the input cannot be added to 6 channels
        Residual(6)(X)


@torch.no_grad()
def test_residual_is_the_identity_when_its_branch_is_zero():
    """f(x) = relu(g(x) + x): zero the last batch norm's scale and shift, and a block passes relu(x) through."""
    blk = Residual(3).eval()
    blk(torch.rand(1, 3, 6, 6))  # materialise
    blk.bn2.weight.zero_()
    blk.bn2.bias.zero_()
    X = torch.randn(4, 3, 6, 6)
    torch.testing.assert_close(blk(X), torch.relu(X))


@torch.no_grad()
def test_resnext_block_groups_and_shapes():
    """The book's example: ResNeXtBlock(32, 16, 1) keeps (4, 32, 96, 96); groups are of 16 channels."""
    X = torch.rand(4, 32, 96, 96)
    blk = ResNeXtBlock(32, groups=16, bot_mul=1)
    assert blk(X).shape == (4, 32, 96, 96)
    assert blk.conv2.groups == 32 // 16
    down = ResNeXtBlock(80, groups=16, bot_mul=0.5, use_1x1conv=True, strides=2)
    assert down(X).shape == (4, 80, 48, 48)
    assert down.conv1.out_channels == 40 and down.conv2.groups == 40 // 16


@torch.no_grad()
def test_dense_block_grows_channels_and_keeps_its_input():
    """The book's example: 2 convs of 10 channels on 3 input channels give 3 + 2 * 10 = 23."""
    blk = DenseBlock(2, 10)
    X = torch.rand(4, 3, 8, 8)
    Y = blk(X)
    assert Y.shape == (4, 23, 8, 8)
    assert torch.equal(Y[:, :3], X)  # concatenation: the input passes through unchanged
    assert isinstance(conv_block(10)[0], nn.LazyBatchNorm2d)  # pre-activation order: BN, ReLU, conv


@torch.no_grad()
def test_transition_block_reduces_channels_and_halves_the_side():
    """The book's example: the dense block's 23 channels to 10, 8x8 to 4x4."""
    assert transition_block(10)(torch.rand(4, 23, 8, 8)).shape == (4, 10, 4, 4)


def test_blocks_are_public_and_documented():
    names = ["vgg_block", "nin_block", "Inception", "Residual", "ResNeXtBlock", "DenseBlock", "transition_block",
             "BatchNorm", "AlexNet", "VGG", "NiN", "GoogleNet", "BNLeNetScratch", "BNLeNet", "ResNet18", "RegNetX32",
             "DenseNet"]
    assert set(names) <= set(zoo_modern_cnn.__all__)
    for name in zoo_modern_cnn.__all__:
        obj = getattr(zoo_modern_cnn, name)
        assert name == "__version__" or (obj.__doc__ or "").strip(), f"{name} has no docstring"
