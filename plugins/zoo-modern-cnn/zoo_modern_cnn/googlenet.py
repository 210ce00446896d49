"""GoogLeNet (d2l §8.4): a stem, then nine Inception blocks, each four parallel branches concatenated on channels."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from zoo_builders import Parallel
from zoo_modern_cnn.common import CNNClassifier

Widths = tuple[int, tuple[int, int], tuple[int, int], int]
"""An Inception block's (c1, (c2 reduce, c2), (c3 reduce, c3), c4) output channels."""

# the book's (and Szegedy et al.'s) channel table; each group ends with a 3x3/2 max-pool except the last
STAGE3: tuple[Widths, ...] = ((64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64))
STAGE4: tuple[Widths, ...] = ((192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64),
                              (128, (128, 256), (24, 64), 64), (112, (144, 288), (32, 64), 64),
                              (256, (160, 320), (32, 128), 128))
STAGE5: tuple[Widths, ...] = ((256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128))


class Inception(Parallel):
    """Four branches on the same input, concatenated along channels: c1 + c2[1] + c3[1] + c4 output channels.

    1x1 conv | 1x1 then 3x3 conv | 1x1 then 5x5 conv | 3x3 max-pool then 1x1 conv; every branch keeps the height and
    width (padding), so only the channel counts add up. The 1x1 convolutions before the 3x3 and 5x5 ones reduce
    the channels they see, which is what makes the block cheap.
    """

    def __init__(self, c1: int, c2: Sequence[int], c3: Sequence[int], c4: int) -> None:
        super().__init__(
            nn.Sequential(nn.LazyConv2d(c1, kernel_size=1), nn.ReLU()),
            nn.Sequential(nn.LazyConv2d(c2[0], kernel_size=1), nn.ReLU(),
                          nn.LazyConv2d(c2[1], kernel_size=3, padding=1), nn.ReLU()),
            nn.Sequential(nn.LazyConv2d(c3[0], kernel_size=1), nn.ReLU(),
                          nn.LazyConv2d(c3[1], kernel_size=5, padding=2), nn.ReLU()),
            nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1), nn.LazyConv2d(c4, kernel_size=1),
                          nn.ReLU()),
            dim=1)


class GoogleNet(CNNClassifier):
    """The book's GoogLeNet; `width` scales every channel count (1: the book's; the tiny preset uses 1/16)."""

    def __init__(self, lr: float = 0.01, num_classes: int = 10, image_size: int = 96, width: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()

        def c(n: int) -> int:
            return max(1, round(n * width))

        def inceptions(table: Sequence[Widths]) -> list[nn.Module]:
            return [Inception(c(c1), (c(c2[0]), c(c2[1])), (c(c3[0]), c(c3[1])), c(c4)) for c1, c2, c3, c4 in table]

        def pool() -> nn.Module:
            return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.net = nn.Sequential(  # shapes for a (1, 96, 96) image
            nn.Sequential(nn.LazyConv2d(c(64), kernel_size=7, stride=2, padding=3), nn.ReLU(), pool()),  # (64, 24, 24)
            nn.Sequential(nn.LazyConv2d(c(64), kernel_size=1), nn.ReLU(),
                          nn.LazyConv2d(c(192), kernel_size=3, padding=1), nn.ReLU(), pool()),  # (192, 12, 12)
            nn.Sequential(*inceptions(STAGE3), pool()),                                      # (480, 6, 6)
            nn.Sequential(*inceptions(STAGE4), pool()),                                      # (832, 3, 3)
            nn.Sequential(*inceptions(STAGE5), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten()),  # (1024,)
            nn.LazyLinear(num_classes))
