"""DenseNet (d2l §8.7): each convolution sees the concatenation of all earlier outputs of its block; transition
layers halve the channels (1x1 conv) and the side (2x2 average pool) between blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from zoo_modern_cnn.common import CNNClassifier


def conv_block(num_channels: int) -> nn.Sequential:
    """Batch norm, ReLU, 3x3 convolution to `num_channels` (ResNet's later "pre-activation" order)."""
    return nn.Sequential(nn.LazyBatchNorm2d(), nn.ReLU(), nn.LazyConv2d(num_channels, kernel_size=3, padding=1))


class DenseBlock(nn.Module):
    """`num_convs` conv blocks of `num_channels` (the growth rate) outputs, each appended to its input along the
    channels: C input channels become C + num_convs * num_channels, height and width kept."""

    def __init__(self, num_convs: int, num_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(*(conv_block(num_channels) for _ in range(num_convs)))

    def forward(self, X: Tensor) -> Tensor:
        for blk in self.net:
            X = torch.cat((X, blk(X)), dim=1)
        return X


def transition_block(num_channels: int) -> nn.Sequential:
    """Batch norm, ReLU, 1x1 conv to `num_channels` (DenseNet passes half its input's), 2x2/2 average pool."""
    return nn.Sequential(nn.LazyBatchNorm2d(), nn.ReLU(), nn.LazyConv2d(num_channels, kernel_size=1),
                         nn.AvgPool2d(kernel_size=2, stride=2))


class DenseNet(CNNClassifier):
    """Stem (ResNet's), dense blocks of `arch` convolutions with growth `growth_rate`, a transition halving the
    channels after every block but the last, then batch norm, ReLU, global average pool and a dense layer."""

    def __init__(self, num_channels: int = 64, growth_rate: int = 32, arch: Sequence[int] = (4, 4, 4, 4),
                 lr: float = 0.01, num_classes: int = 10, image_size: int = 96) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Sequential(
            nn.LazyConv2d(num_channels, kernel_size=7, stride=2, padding=3), nn.LazyBatchNorm2d(), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))  # (64, 24, 24) for a (1, 96, 96) image
        for i, num_convs in enumerate(arch):  # the book's child names: dense_blk1, tran_blk1, ..., last
            self.net.add_module(f"dense_blk{i + 1}", DenseBlock(num_convs, growth_rate))
            num_channels += num_convs * growth_rate
            if i != len(arch) - 1:
                num_channels //= 2
                self.net.add_module(f"tran_blk{i + 1}", transition_block(num_channels))
        self.net.add_module("last", nn.Sequential(
            nn.LazyBatchNorm2d(), nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.LazyLinear(num_classes)))
