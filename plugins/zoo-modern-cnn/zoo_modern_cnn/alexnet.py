"""AlexNet (d2l §8.1), for 224x224 Fashion-MNIST: five convolutions, three max-pools, two 4096-unit dense layers.

The book's version of Krizhevsky et al. (2012) on one GPU, grey input and 10 classes; shapes below are the book's.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from zoo_modern_cnn.common import CNNClassifier


class AlexNet(CNNClassifier):
    """`channels` are the five convolutions' widths and `num_hiddens` the dense layers' (the book's by default)."""

    def __init__(self, lr: float = 0.01, num_classes: int = 10, image_size: int = 224,
                 channels: Sequence[int] = (96, 256, 384, 384, 256), num_hiddens: int = 4096,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        c1, c2, c3, c4, c5 = channels
        self.net = nn.Sequential(  # shapes for a (1, 224, 224) image
            nn.LazyConv2d(c1, kernel_size=11, stride=4, padding=1), nn.ReLU(),  # (96, 54, 54)
            nn.MaxPool2d(kernel_size=3, stride=2),                               # (96, 26, 26)
            nn.LazyConv2d(c2, kernel_size=5, padding=2), nn.ReLU(),              # (256, 26, 26)
            nn.MaxPool2d(kernel_size=3, stride=2),                               # (256, 12, 12)
            nn.LazyConv2d(c3, kernel_size=3, padding=1), nn.ReLU(),              # (384, 12, 12)
            nn.LazyConv2d(c4, kernel_size=3, padding=1), nn.ReLU(),              # (384, 12, 12)
            nn.LazyConv2d(c5, kernel_size=3, padding=1), nn.ReLU(),              # (256, 12, 12)
            nn.MaxPool2d(kernel_size=3, stride=2), nn.Flatten(),                 # (256, 5, 5) -> 6400
            # dropout instead of AlexNet's weight decay alone: the dense layers hold 95% of the parameters
            nn.LazyLinear(num_hiddens), nn.ReLU(), nn.Dropout(dropout),
            nn.LazyLinear(num_hiddens), nn.ReLU(), nn.Dropout(dropout),
            nn.LazyLinear(num_classes))
