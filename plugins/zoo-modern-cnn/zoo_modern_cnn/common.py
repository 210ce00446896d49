"""What every chapter 8 network shares: the book's Xavier initialisation and an image classifier over ``self.net``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo_core import Classifier


def init_cnn(module: nn.Module) -> None:
    """Xavier-uniform weights for linear and convolutional layers (d2l §7.6 ``init_cnn``); biases keep PyTorch's.

    Applied by `CNNClassifier.init_weights`, which the core runs once the lazy layers have their shapes: the book
    applies it in ``__init__``, where lazy layers have no weights yet and it does nothing.
    """
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(module.weight)


class CNNClassifier(Classifier):
    """A classifier of square grey images whose layers are the book's ``self.net`` (an `nn.Sequential`).

    Subclasses take ``image_size`` (the side the data is resized to) and build ``self.net``; keeping the book's
    top-level children makes ``zoo info NAME --layers`` print the book's layer summary.
    """

    image_size: int
    in_channels = 1  # Fashion-MNIST is grey

    def forward(self, X: Tensor) -> Tensor:  # (batch, 1, image_size, image_size) -> (batch, num_classes)
        return self.net(X)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.rand(batch_size, self.in_channels, self.image_size, self.image_size),)

    def init_weights(self) -> None:
        self.net.apply(init_cnn)
