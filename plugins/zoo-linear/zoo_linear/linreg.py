"""Linear regression (d2l §3.4 from scratch, §3.5 concise) and weight decay (§3.7)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core import Model


class SGD:
    """Minibatch stochastic gradient descent from scratch (d2l §3.4.3): ``p -= lr * p.grad``."""

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        self.params = list(params)
        self.lr = lr

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p -= self.lr * p.grad

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr}  # plain SGD keeps no other state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr = state["lr"]


class LinearRegressionScratch(Model):
    """y = Xw + b with w ~ N(0, sigma^2), b = 0; loss (y_hat - y)^2 / 2; the SGD above."""

    def __init__(self, num_inputs: int = 2, lr: float = 0.03, sigma: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.w = nn.Parameter(torch.normal(0, sigma, (num_inputs, 1)))
        self.b = nn.Parameter(torch.zeros(1))

    def forward(self, X: Tensor) -> Tensor:  # (batch, num_inputs) -> (batch, 1)
        return X @ self.w + self.b

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return ((y_hat - y) ** 2 / 2).mean()

    def configure_optimizers(self) -> SGD:
        return SGD([self.w, self.b], self.lr)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.randn(batch_size, self.num_inputs),)

    def get_w_b(self) -> tuple[Tensor, Tensor]:
        return self.w.detach(), self.b.detach()


class LinearRegression(Model):
    """Concise: ``nn.LazyLinear(1)`` initialised N(0, 0.01^2) / 0, ``MSELoss``, ``torch.optim.SGD``."""

    def __init__(self, lr: float = 0.03, num_inputs: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.LazyLinear(1)

    def init_weights(self) -> None:
        self.net.weight.data.normal_(0, 0.01)
        self.net.bias.data.fill_(0)

    def forward(self, X: Tensor) -> Tensor:  # (batch, num_inputs) -> (batch, 1)
        return self.net(X)

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(y_hat, y)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.randn(batch_size, self.num_inputs),)

    def get_w_b(self) -> tuple[Tensor, Tensor]:
        return self.net.weight.detach(), self.net.bias.detach()


def l2_penalty(w: Tensor) -> Tensor:
    return (w**2).sum() / 2


class WeightDecayScratch(LinearRegressionScratch):
    """Linear regression with ``lambd * ||w||^2 / 2`` added to the loss (the bias is not penalised)."""

    def __init__(self, num_inputs: int = 200, lambd: float = 3.0, lr: float = 0.01, sigma: float = 0.01) -> None:
        super().__init__(num_inputs, lr, sigma)
        self.save_hyperparameters()

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return super().loss(y_hat, y) + self.lambd * l2_penalty(self.w)


class WeightDecay(LinearRegression):
    """Concise: ``weight_decay=wd`` on the weights only, through SGD's parameter groups."""

    def __init__(self, wd: float = 3.0, lr: float = 0.01, num_inputs: int = 200) -> None:
        super().__init__(lr, num_inputs)
        self.save_hyperparameters()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([{"params": self.net.weight, "weight_decay": self.wd},
                                {"params": self.net.bias}], lr=self.lr)
