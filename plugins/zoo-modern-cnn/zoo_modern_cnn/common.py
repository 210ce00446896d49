"""What every chapter 8 network shares: an image classifier over ``self.net``, Xavier-initialised by chapter 7's
`init_cnn` once the lazy layers have their shapes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo_core import Classifier
from zoo_cnn import init_cnn  # chapter 7's (d2l §7.6)


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
