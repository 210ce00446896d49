"""Network in Network (d2l §8.3): 1x1 convolutions as per-pixel MLPs, and global average pooling instead of dense
layers, which cuts AlexNet's 47M parameters to 2M."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from zoo_modern_cnn.common import CNNClassifier


def nin_block(out_channels: int, kernel_size: int, strides: int, padding: int) -> nn.Sequential:
    """A convolution then two 1x1 convolutions (a two-layer MLP applied at every pixel), each with ReLU."""
    return nn.Sequential(
        nn.LazyConv2d(out_channels, kernel_size, strides, padding), nn.ReLU(),
        nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU(),
        nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU())


class NiN(CNNClassifier):
    """AlexNet's first three convolution widths (`channels`) as NiN blocks; the last block has one channel per class,
    averaged over the image into the logits."""

    def __init__(self, lr: float = 0.05, num_classes: int = 10, image_size: int = 224,
                 channels: Sequence[int] = (96, 256, 384), dropout: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        c1, c2, c3 = channels
        self.net = nn.Sequential(  # shapes for a (1, 224, 224) image
            nin_block(c1, kernel_size=11, strides=4, padding=0), nn.MaxPool2d(3, stride=2),  # (96, 54, 54) -> 26
            nin_block(c2, kernel_size=5, strides=1, padding=2), nn.MaxPool2d(3, stride=2),   # (256, 26, 26) -> 12
            nin_block(c3, kernel_size=3, strides=1, padding=1), nn.MaxPool2d(3, stride=2),   # (384, 12, 12) -> 5
            nn.Dropout(dropout),
            nin_block(num_classes, kernel_size=3, strides=1, padding=1),                    # (10, 5, 5)
            nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())                                     # (10,)
