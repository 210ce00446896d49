"""The book's synthetic regression data (chapter 3), generated from a seeded generator.

The seed is a hyper-parameter of the data, independent of the training seed, so every run (and every DDP rank)
sees the same examples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from zoo_core.data.module import DataModule, seeded_generator


def linear_data(w: Tensor, b: float, noise: float, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` examples of ``y = Xw + b + eps`` with ``X ~ N(0, 1)`` and ``eps ~ N(0, noise^2)``; y is ``(n, 1)``."""
    generator = seeded_generator(seed, "linear-data")
    X = torch.randn(n, len(w), generator=generator)
    eps = torch.randn(n, 1, generator=generator) * noise
    return X, X @ w.reshape(-1, 1) + b + eps


class SyntheticRegression(DataModule):
    """Synthetic linear-regression data (d2l §3.3): w = [2, -3.4], b = 4.2, noise 0.01."""

    def __init__(self, w: Sequence[float] = (2.0, -3.4), b: float = 4.2, noise: float = 0.01,
                 num_train: int = 1000, num_val: int = 1000, batch_size: int = 32, seed: int = 0) -> None:
        self.save_hyperparameters()

    def load(self) -> dict[str, tuple[Tensor, ...]]:
        w = torch.tensor(self.w, dtype=torch.float32)
        X, y = linear_data(w, self.b, self.noise, self.num_train + self.num_val, self.seed)
        return {"train": (X[: self.num_train], y[: self.num_train]),
                "val": (X[self.num_train :], y[self.num_train :])}


class WeightDecayData(DataModule):
    """High-dimensional regression for weight decay (d2l §3.7): y = 0.05 + sum_i 0.01 x_i + N(0, 0.01^2).

    200 inputs and 20 training examples: a linear model over-fits it unless regularised.
    """

    def __init__(self, num_train: int = 20, num_val: int = 100, num_inputs: int = 200, batch_size: int = 5,
                 seed: int = 0) -> None:
        self.save_hyperparameters()

    def load(self) -> dict[str, tuple[Tensor, ...]]:
        w = torch.full((self.num_inputs,), 0.01)
        X, y = linear_data(w, 0.05, 0.01, self.num_train + self.num_val, self.seed)
        return {"train": (X[: self.num_train], y[: self.num_train]),
                "val": (X[self.num_train :], y[self.num_train :])}
