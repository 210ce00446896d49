"""Multilayer perceptrons for 28x28 Fashion-MNIST (d2l §5.2) and dropout (d2l §5.6), from scratch and concise."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo_core import Classifier

IMAGE_SHAPE = (1, 28, 28)


def relu(X: Tensor) -> Tensor:
    """max(X, 0), the book's own ReLU."""
    return torch.max(X, torch.zeros_like(X))


def dropout_layer(X: Tensor, dropout: float) -> Tensor:
    """Zero each element with probability `dropout` and scale the survivors by 1 / (1 - dropout) (d2l §5.6.2).

    The mask is drawn on X's device (the book draws it on the CPU, which breaks on a GPU). ``dropout == 1`` returns
    exact zeros (no 0 / 0) and ``dropout == 0`` returns X itself.
    """
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout must be in [0, 1], got {dropout}")
    if dropout == 1:
        return torch.zeros_like(X)
    if dropout == 0:
        return X
    mask = (torch.rand(X.shape, device=X.device) > dropout).to(X.dtype)
    return mask * X / (1.0 - dropout)


class _ImageClassifier(Classifier):
    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.rand(batch_size, *IMAGE_SHAPE),)


class MLPScratch(_ImageClassifier):
    """One hidden ReLU layer with its own parameters: W1 ~ N(0, sigma^2), b1 = 0, W2 ~ N(0, sigma^2), b2 = 0."""

    def __init__(self, num_inputs: int = 784, num_outputs: int = 10, num_hiddens: int = 256, lr: float = 0.1,
                 sigma: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.W1 = nn.Parameter(torch.randn(num_inputs, num_hiddens) * sigma)
        self.b1 = nn.Parameter(torch.zeros(num_hiddens))
        self.W2 = nn.Parameter(torch.randn(num_hiddens, num_outputs) * sigma)
        self.b2 = nn.Parameter(torch.zeros(num_outputs))

    def forward(self, X: Tensor) -> Tensor:  # (batch, 1, 28, 28) -> (batch, num_outputs)
        H = relu(X.reshape(-1, self.W1.shape[0]) @ self.W1 + self.b1)
        return H @ self.W2 + self.b2


class MLP(_ImageClassifier):
    """Concise: Flatten, LazyLinear(num_hiddens), ReLU, LazyLinear(num_outputs); PyTorch's default initialisation."""

    def __init__(self, num_outputs: int = 10, num_hiddens: int = 256, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_hiddens), nn.ReLU(), nn.LazyLinear(num_outputs))

    def forward(self, X: Tensor) -> Tensor:
        return self.net(X)


class DropoutMLPScratch(_ImageClassifier):
    """Two hidden ReLU layers, each followed by `dropout_layer` in training mode only (d2l §5.6.3)."""

    def __init__(self, num_outputs: int = 10, num_hiddens_1: int = 256, num_hiddens_2: int = 256,
                 dropout_1: float = 0.5, dropout_2: float = 0.5, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lin1 = nn.LazyLinear(num_hiddens_1)
        self.lin2 = nn.LazyLinear(num_hiddens_2)
        self.lin3 = nn.LazyLinear(num_outputs)

    def forward(self, X: Tensor) -> Tensor:
        H1 = relu(self.lin1(X.reshape(X.shape[0], -1)))
        if self.training:
            H1 = dropout_layer(H1, self.dropout_1)
        H2 = relu(self.lin2(H1))
        if self.training:
            H2 = dropout_layer(H2, self.dropout_2)
        return self.lin3(H2)


class DropoutMLP(_ImageClassifier):
    """Concise: nn.Dropout after each hidden ReLU (d2l §5.6.4)."""

    def __init__(self, num_outputs: int = 10, num_hiddens_1: int = 256, num_hiddens_2: int = 256,
                 dropout_1: float = 0.5, dropout_2: float = 0.5, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Flatten(), nn.LazyLinear(num_hiddens_1), nn.ReLU(), nn.Dropout(dropout_1),
            nn.LazyLinear(num_hiddens_2), nn.ReLU(), nn.Dropout(dropout_2), nn.LazyLinear(num_outputs))

    def forward(self, X: Tensor) -> Tensor:
        return self.net(X)
