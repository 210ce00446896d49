"""Softmax regression (d2l §4.4 from scratch, §4.5 concise) for 28x28 Fashion-MNIST images.

The book's from-scratch version returns ``softmax(O)`` and takes ``-log`` of it: ``exp`` overflows for large logits
and ``log`` of an underflowed 0 is -inf. Here the model returns the logits and the loss works in log space with the
log-sum-exp trick (the fix the book itself derives in §4.5.2); `softmax` is the same stable computation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo_core import Classifier

IMAGE_SHAPE = (1, 28, 28)


def log_softmax(O: Tensor) -> Tensor:
    """log softmax over the last dimension, shifted by the row maximum so that exp never overflows."""
    shifted = O - O.amax(dim=-1, keepdim=True)
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def softmax(O: Tensor) -> Tensor:
    """softmax over the last dimension, stable for any finite logits."""
    O_exp = (O - O.amax(dim=-1, keepdim=True)).exp()
    return O_exp / O_exp.sum(dim=-1, keepdim=True)


def cross_entropy(O: Tensor, y: Tensor) -> Tensor:
    """Mean of -log softmax(O)[i, y_i], computed from the logits O."""
    return -log_softmax(O).gather(-1, y.unsqueeze(-1)).mean()


class SoftmaxRegressionScratch(Classifier):
    """Logits ``X W + b`` with W ~ N(0, sigma^2) of shape (num_inputs, num_outputs) and b = 0."""

    def __init__(self, num_inputs: int = 784, num_outputs: int = 10, lr: float = 0.1, sigma: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.W = nn.Parameter(torch.normal(0, sigma, (num_inputs, num_outputs)))
        self.b = nn.Parameter(torch.zeros(num_outputs))

    def forward(self, X: Tensor) -> Tensor:  # (batch, 1, 28, 28) -> (batch, num_outputs)
        return X.reshape(-1, self.W.shape[0]) @ self.W + self.b

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return cross_entropy(y_hat, y)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.rand(batch_size, *IMAGE_SHAPE),)


class SoftmaxRegression(Classifier):
    """Concise: ``nn.Flatten()`` then ``nn.LazyLinear(num_outputs)``; PyTorch's cross-entropy."""

    def __init__(self, num_outputs: int = 10, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_outputs))

    def forward(self, X: Tensor) -> Tensor:  # (batch, 1, 28, 28) -> (batch, num_outputs)
        return self.net(X)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.rand(batch_size, *IMAGE_SHAPE),)
