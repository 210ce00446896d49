"""The synthetic data chapter 6's models train on (the book itself only runs them on ``X = torch.rand(2, 20)``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from zoo_core.data import DataModule, seeded_generator


class BuildersData(DataModule):
    """X ~ U(0, 1)^num_inputs (the book's ``torch.rand``), y = tanh(2 (X - 0.5) W / sqrt(num_inputs)) + noise.

    W ~ N(0, 1), ``(num_inputs, num_outputs)``, is fixed by `seed`: a smooth nonlinear target with values in (-1, 1)
    (about 0.5 in standard deviation), which every model of the chapter can fit part of, the bounded chimera too.
    """

    def __init__(self, num_inputs: int = 20, num_outputs: int = 10, num_train: int = 1000, num_val: int = 200,
                 batch_size: int = 32, noise: float = 0.01, seed: int = 0) -> None:
        self.save_hyperparameters()

    def load(self) -> dict[str, tuple[Tensor, ...]]:
        g = seeded_generator(self.seed, "builders-data")
        W = torch.randn(self.num_inputs, self.num_outputs, generator=g)
        n = self.num_train + self.num_val
        X = torch.rand(n, self.num_inputs, generator=g)
        y = torch.tanh(2 * (X - 0.5) @ W / math.sqrt(self.num_inputs))
        y = y + self.noise * torch.randn(n, self.num_outputs, generator=g)
        return {"train": (X[: self.num_train], y[: self.num_train]),
                "val": (X[self.num_train :], y[self.num_train :])}


__all__ = ["BuildersData"]
