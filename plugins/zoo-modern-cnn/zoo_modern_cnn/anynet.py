"""AnyNet and RegNetX-32 (d2l §8.8, designing CNN architectures): a stem, stages of ResNeXt blocks, a head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from zoo_modern_cnn.common import CNNClassifier
from zoo_modern_cnn.resnet import ResNeXtBlock


def anynet_stage(depth: int, num_channels: int, groups: int, bot_mul: float) -> nn.Sequential:
    """`depth` ResNeXt blocks; the first halves the side and changes channels (so it has a 1x1-conv shortcut)."""
    return nn.Sequential(*(
        ResNeXtBlock(num_channels, groups, bot_mul, use_1x1conv=True, strides=2) if i == 0
        else ResNeXtBlock(num_channels, groups, bot_mul)
        for i in range(depth)))


class AnyNet(CNNClassifier):
    """Stem (3x3/2 conv to `stem_channels`, batch norm, ReLU), one stage per (depth, channels, groups, bot_mul) in
    `arch`, then global average pool and a dense layer."""

    def __init__(self, arch: Sequence[Sequence[float]], stem_channels: int, lr: float = 0.05, num_classes: int = 10,
                 image_size: int = 96) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Sequential(
            nn.LazyConv2d(stem_channels, kernel_size=3, stride=2, padding=1), nn.LazyBatchNorm2d(), nn.ReLU()))
        for i, (depth, num_channels, groups, bot_mul) in enumerate(arch):  # the book's child names: stage1 ..., head
            self.net.add_module(f"stage{i + 1}", anynet_stage(int(depth), int(num_channels), int(groups), bot_mul))
        self.net.add_module("head", nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.LazyLinear(num_classes)))


class RegNetX32(AnyNet):
    """The book's RegNetX-32 (32 MFLOPs): stem 32; stages (depth 4, 32 channels) and (depth 6, 80 channels); group
    width 16; no bottleneck (bot_mul 1). At 96 px: (32, 48, 48) -> (32, 24, 24) -> (80, 12, 12) -> 10."""

    def __init__(self, lr: float = 0.05, num_classes: int = 10, image_size: int = 96, stem_channels: int = 32,
                 depths: Sequence[int] = (4, 6), channels: Sequence[int] = (32, 80), groups: int = 16,
                 bot_mul: float = 1.0) -> None:
        super().__init__([(d, c, groups, bot_mul) for d, c in zip(depths, channels)], stem_channels, lr,
                         num_classes, image_size)
        self.save_hyperparameters()  # RegNetX32's own arguments, the ones that rebuild it
