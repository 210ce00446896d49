"""LeNet-5 as in d2l §7.6: sigmoid activations, average pooling, lazy layers, Xavier-uniform weights.

    X (batch, 1, 28, 28)
    conv 6, k5, p2 -> sigmoid -> avgpool 2/2    (batch, 6, 14, 14)
    conv 16, k5    -> sigmoid -> avgpool 2/2    (batch, 16, 5, 5)
    flatten -> 120 -> sigmoid -> 84 -> sigmoid -> 10 logits

Initialisation: the book's ``init_cnn`` (Xavier-uniform weights of every linear and convolution layer; biases keep
PyTorch's default) runs in `init_weights`, once `zoo_core.Model.materialize` has given the lazy layers their shapes.
Applied in ``__init__`` it would do nothing to them.

Speed on CPU: the convolutions run on activations in channels-last (NHWC) memory, the layout oneDNN's kernels are
fastest in (`zoo_core.channels_last`: about 0.7x the step time of NCHW here, see the plugin README).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from zoo_core import Classifier, channels_last

IMAGE_SHAPE = (1, 28, 28)


def init_cnn(module: nn.Module) -> None:
    """The book's ``init_cnn`` (d2l §7.6): Xavier-uniform weights for linear and convolution layers; biases keep
    PyTorch's default. Use it with ``net.apply`` once lazy layers have their shapes (`init_weights` does); applied
    to a lazy layer it would do nothing. Chapter 8's networks use it too."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(module.weight)


class LeNet(Classifier):
    """LeNet (d2l §7.6) for 28x28 single-channel images.

    Args:
        num_classes: outputs of the last layer.
        lr: SGD learning rate (the book's 0.1).
        channels: output channels of the two convolutions (the book's 6 and 16).
        hidden: widths of the two hidden dense layers (the book's 120 and 84).
    """

    def __init__(self, num_classes: int = 10, lr: float = 0.1, channels: Sequence[int] = (6, 16),
                 hidden: Sequence[int] = (120, 84)) -> None:
        super().__init__()
        self.save_hyperparameters()
        (c1, c2), (h1, h2) = channels, hidden
        self.net = nn.Sequential(
            nn.LazyConv2d(c1, kernel_size=5, padding=2), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.LazyConv2d(c2, kernel_size=5), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(),
            nn.LazyLinear(h1), nn.Sigmoid(),
            nn.LazyLinear(h2), nn.Sigmoid(),
            nn.LazyLinear(num_classes))

    def forward(self, X: Tensor) -> Tensor:  # (batch, 1, 28, 28) -> (batch, num_classes)
        return self.net(channels_last(X))

    @torch.no_grad()
    def init_weights(self) -> None:
        """The book's `init_cnn` on every layer."""
        if self.has_lazy_parameters():
            raise RuntimeError("LeNet.init_weights needs materialised layers: call materialize() first")
        self.net.apply(init_cnn)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.rand(batch_size, *IMAGE_SHAPE),)
