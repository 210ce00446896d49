"""VGG (d2l §8.2): networks of repeated blocks, each 3x3 convolutions then a 2x2 max-pool that halves the side."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from zoo_modern_cnn.common import CNNClassifier

VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
"""Simonyan & Zisserman's VGG-11, (convolutions, channels) per block; the book summarises it, but trains:"""
BOOK_ARCH = ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))
"""the book's VGG for Fashion-MNIST: VGG-11 with a quarter of the channels (about 16x fewer convolution FLOPs)."""


def vgg_block(num_convs: int, out_channels: int) -> nn.Sequential:
    """`num_convs` 3x3 convolutions (padding 1: the side is kept) with ReLU, then a 2x2 max-pool (side halved)."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.LazyConv2d(out_channels, kernel_size=3, padding=1), nn.ReLU()]
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class VGG(CNNClassifier):
    """`arch` lists (convolutions, channels) per block; five blocks take 224 px down to 7 px."""

    def __init__(self, arch: Sequence[Sequence[int]] = BOOK_ARCH, lr: float = 0.01, num_classes: int = 10,
                 image_size: int = 224, num_hiddens: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            *(vgg_block(num_convs, out_channels) for num_convs, out_channels in arch),  # (128, 7, 7) at 224 px
            nn.Flatten(),
            nn.LazyLinear(num_hiddens), nn.ReLU(), nn.Dropout(dropout),
            nn.LazyLinear(num_hiddens), nn.ReLU(), nn.Dropout(dropout),
            nn.LazyLinear(num_classes))
