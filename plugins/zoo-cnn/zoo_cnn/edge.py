"""Learning a kernel from data (d2l §7.2.3-7.2.4): the vertical-edge detector.

The image is 6x8 ones with a black band in columns 2-5; its target is the output of the hand-made edge kernel
``[[1, -1]]`` (1 where white turns black, -1 where black turns white). A 1x2 convolution without bias, trained on
that single pair with the squared error summed over pixels (the book's loss) and lr 3e-2, recovers the kernel in
about ten steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from zoo_core import DataModule, Model
from zoo_cnn.ops import corr2d

EDGE_KERNEL = ((1.0, -1.0),)
IMAGE_SIZE = (6, 8)


def edge_image() -> tuple[Tensor, Tensor]:
    """The book's image X (6, 8) and its vertical edges Y = corr2d(X, [[1, -1]]) (6, 7)."""
    X = torch.ones(IMAGE_SIZE)
    X[:, 2:6] = 0
    return X, corr2d(X, torch.tensor(EDGE_KERNEL))


class EdgeImage(DataModule):
    """One example, the edge image and its edge map, as (1, 1, 6, 8) and (1, 1, 6, 7); validation is the same pair."""

    def __init__(self, batch_size: int = 1) -> None:
        self.save_hyperparameters()

    def load(self) -> dict[str, tuple[Tensor, ...]]:
        X, Y = edge_image()
        pair = (X.reshape(1, 1, *X.shape), Y.reshape(1, 1, *Y.shape))
        return {"train": pair, "val": pair}


class EdgeDetector(Model):
    """``nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)`` fitted to (X, Y); its weight should become [[1, -1]]."""

    def __init__(self, kernel_size: Sequence[int] = (1, 2), lr: float = 3e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Conv2d(1, 1, kernel_size=tuple(kernel_size), bias=False)

    def forward(self, X: Tensor) -> Tensor:  # (batch, 1, 6, 8) -> (batch, 1, 6, 7)
        return self.net(X)

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        # the book's loss: squared error summed over pixels (and the batch), not averaged; lr 3e-2 is tuned for it
        return ((y_hat - y) ** 2).sum()

    @property
    def kernel(self) -> Tensor:
        """The learnt kernel, (kh, kw)."""
        return self.net.weight.detach()[0, 0]

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.rand(batch_size, 1, *IMAGE_SIZE),)
