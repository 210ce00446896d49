"""ResNet and ResNeXt (d2l §8.6): residual blocks learn f(x) - x, so a block can default to the identity and depth
stops hurting; ResNeXt blocks widen them with grouped convolutions between 1x1 bottlenecks."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from zoo_modern_cnn.common import CNNClassifier


class Residual(nn.Module):
    """Two 3x3 conv + batch-norm layers added to the input: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    With ``use_1x1conv`` the shortcut is a 1x1 convolution (stride `strides`), needed whenever the block changes the
    channel count or (``strides=2``) halves the height and width; otherwise it is the identity.
    """

    def __init__(self, num_channels: int, use_1x1conv: bool = False, strides: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1)
        self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides) if use_1x1conv else None
        self.bn1 = nn.LazyBatchNorm2d()
        self.bn2 = nn.LazyBatchNorm2d()

    def forward(self, X: Tensor) -> Tensor:
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3 is not None:
            X = self.conv3(X)
        return F.relu(Y + X)  # not the book's in-place `Y += X`: autograd and export prefer no mutation


class ResNeXtBlock(nn.Module):
    """1x1 conv to ``num_channels * bot_mul`` channels, grouped 3x3 conv, 1x1 conv back, each with batch norm; plus a
    shortcut (a 1x1 conv + batch norm with ``use_1x1conv``, else the identity), then ReLU.

    `groups` is the book's: the channels per group, so the 3x3 conv has ``bot_channels // groups`` groups.
    """

    def __init__(self, num_channels: int, groups: int, bot_mul: float, use_1x1conv: bool = False,
                 strides: int = 1) -> None:
        super().__init__()
        bot_channels = int(round(num_channels * bot_mul))
        self.conv1 = nn.LazyConv2d(bot_channels, kernel_size=1, stride=1)
        self.conv2 = nn.LazyConv2d(bot_channels, kernel_size=3, stride=strides, padding=1,
                                   groups=bot_channels // groups)
        self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=1)
        self.bn1 = nn.LazyBatchNorm2d()
        self.bn2 = nn.LazyBatchNorm2d()
        self.bn3 = nn.LazyBatchNorm2d()
        if use_1x1conv:
            self.conv4 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides)
            self.bn4 = nn.LazyBatchNorm2d()
        else:
            self.conv4 = None

    def forward(self, X: Tensor) -> Tensor:
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = F.relu(self.bn2(self.conv2(Y)))
        Y = self.bn3(self.conv3(Y))
        if self.conv4 is not None:
            X = self.bn4(self.conv4(X))
        return F.relu(Y + X)


def resnet_stage(num_residuals: int, num_channels: int, first_block: bool = False) -> nn.Sequential:
    """`num_residuals` residual blocks; the first halves the side and changes channels, except in the first stage
    (which follows the stem's max-pool and keeps its channels)."""
    return nn.Sequential(*(
        Residual(num_channels, use_1x1conv=True, strides=2) if i == 0 and not first_block else Residual(num_channels)
        for i in range(num_residuals)))


class ResNet(CNNClassifier):
    """Stem (7x7/2 conv, batch norm, ReLU, 3x3/2 max-pool), one stage per (blocks, channels) in `arch`, global
    average pool and a dense layer. The stem has the first stage's channels, as its identity shortcuts need."""

    def __init__(self, arch: Sequence[Sequence[int]], lr: float = 0.01, num_classes: int = 10,
                 image_size: int = 96) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Sequential(
            nn.LazyConv2d(arch[0][1], kernel_size=7, stride=2, padding=3), nn.LazyBatchNorm2d(), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))  # (64, 24, 24) for a (1, 96, 96) image
        for i, (num_residuals, num_channels) in enumerate(arch):  # the book's child names: b2 ... b5, last
            self.net.add_module(f"b{i + 2}", resnet_stage(num_residuals, num_channels, first_block=i == 0))
        self.net.add_module("last", nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.LazyLinear(num_classes)))


class ResNet18(ResNet):
    """ResNet-18: four stages of two residual blocks (16 convolutions) plus the stem's and the dense layer;
    `channels` are the stages' widths (the book's 64, 128, 256, 512 by default)."""

    def __init__(self, lr: float = 0.01, num_classes: int = 10, image_size: int = 96,
                 channels: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__([(2, c) for c in channels], lr, num_classes, image_size)
        self.save_hyperparameters()  # ResNet18's own arguments, the ones that rebuild it
