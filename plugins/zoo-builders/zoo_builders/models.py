"""Chapter 6's registered models: one small regression network per idea, each built from the library's blocks.

All take ``X: float32[batch, num_inputs]`` (the book's ``torch.rand`` inputs), regress ``num_outputs`` targets with
the mean squared error, and train on ``builders-synthetic`` (`zoo_builders.data.BuildersData`). Lazy layers get
their shapes from the example batch (`zoo_core.Model.materialize`), and an input of the wrong size fails naming
the layer and both shapes (`zoo_builders.lazy.InputChecked`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core import Model
from zoo_builders.blocks import FixedHiddenMLP, MySequential, Parallel, chimera, repeat
from zoo_builders.layers import CenteredLayer, FourierCoefficients, MyLinear, TensorReduction
from zoo_builders.lazy import InputChecked


class Regressor(InputChecked, Model):
    """Base of the chapter's models: ``self.net`` maps ``(batch, num_inputs)`` to ``(batch, num_outputs)``; MSE.
    An input of the wrong size is an `InputSizeError` naming the layer (`InputChecked`)."""

    num_inputs: int

    def forward(self, X: Tensor) -> Tensor:
        return self.net(X)

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(y_hat, y)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.rand(batch_size, self.num_inputs),)


class MySequentialMLP(Regressor):
    """d2l §6.1: the MLP ``20-256-10`` in the book's own `MySequential`, from lazy layers."""

    def __init__(self, num_inputs: int = 20, num_hiddens: int = 256, num_outputs: int = 10, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = MySequential(nn.LazyLinear(num_hiddens), nn.ReLU(), nn.LazyLinear(num_outputs))


class FixedHiddenNet(Regressor):
    """d2l §6.1's `FixedHiddenMLP` (constant buffer weight, a layer used twice, the halving loop in closed form),
    per example: ``(batch, num_inputs) -> (batch, 1)``. Its linear layer takes its own output, so num_inputs is also
    its width."""

    def __init__(self, num_inputs: int = 20, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = FixedHiddenMLP(num_inputs, per_example=True)

    def forward(self, X: Tensor) -> Tensor:
        return self.net(X).unsqueeze(-1)  # (batch,) -> (batch, 1)


class Chimera(Regressor):
    """d2l §6.1's chimera, ``Sequential(NestMLP(), LazyLinear(20), FixedHiddenMLP())``, per example:
    ``(batch, num_inputs) -> (batch, 1)``."""

    def __init__(self, num_inputs: int = 20, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = chimera(per_example=True)

    def forward(self, X: Tensor) -> Tensor:
        return self.net(X).unsqueeze(-1)


class ParallelMLP(Regressor):
    """d2l §6.1, exercise 2: one-layer MLP branches of ``branches`` units side by side (`Parallel`: 12 + 24 -> 36
    features), then a linear head."""

    def __init__(self, num_inputs: int = 20, branches: tuple[int, ...] = (12, 24), num_outputs: int = 10,
                 lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(Parallel(*[nn.Sequential(nn.LazyLinear(h), nn.ReLU()) for h in branches]),
                                 nn.LazyLinear(num_outputs))


class RepeatMLP(Regressor):
    """d2l §6.1, exercise 3: ``num_blocks`` copies of a ``Linear-ReLU`` block from the factory `repeat`, combined
    by `mode` (``sequential``, ``parallel-sum``, ``parallel-concat``, ``residual``), tied or not, between an input
    layer and a linear head."""

    def __init__(self, num_inputs: int = 20, num_hiddens: int = 256, num_blocks: int = 2, mode: str = "sequential",
                 tied: bool = False, num_outputs: int = 10, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        blocks = repeat(lambda: nn.Sequential(nn.LazyLinear(num_hiddens), nn.ReLU()), num_blocks, mode, tied)
        self.net = nn.Sequential(nn.LazyLinear(num_hiddens), nn.ReLU(), blocks, nn.LazyLinear(num_outputs))


class TiedMLP(Regressor):
    """d2l §6.2.3: ``Linear 8, ReLU, shared, ReLU, shared, ReLU, Linear 1`` where ``shared`` is one layer used twice:
    one parameter set, whose gradient is the sum of both uses', stored once in safetensors."""

    def __init__(self, num_inputs: int = 20, num_hiddens: int = 8, num_outputs: int = 1, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        shared = nn.LazyLinear(num_hiddens)
        self.net = nn.Sequential(nn.LazyLinear(num_hiddens), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(),
                                 nn.LazyLinear(num_outputs))


class CenteredMLP(Regressor):
    """d2l §6.5.1: ``Linear, CenteredLayer, ReLU, Linear``; the centring is per example (``dim=-1``), so that an
    example's prediction does not depend on the rest of its batch."""

    def __init__(self, num_inputs: int = 20, num_hiddens: int = 128, num_outputs: int = 10, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.LazyLinear(num_hiddens), CenteredLayer(dim=-1), nn.ReLU(),
                                 nn.LazyLinear(num_outputs))


class MyLinearMLP(Regressor):
    """d2l §6.5.2: ``MyLinear(64, 8), MyLinear(8, 1)``, the last one without ReLU (a regression output); lr 0.03
    (64 uncentred inputs make steps of 0.1 overshoot)."""

    def __init__(self, num_inputs: int = 64, num_hiddens: int = 8, num_outputs: int = 1, lr: float = 0.03) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(MyLinear(num_inputs, num_hiddens), MyLinear(num_hiddens, num_outputs, relu=False))

    @torch.no_grad()
    def init_weights(self) -> None:
        # the book's N(0, 1) weights give outputs of size ~sqrt(num_inputs): SGD on their MSE diverges; N(0, 1/in)
        # keeps every layer's output at the size of its input
        for layer in self.net:
            layer.weight.normal_(0, 1 / math.sqrt(layer.weight.shape[0]))
            layer.bias.zero_()


class TensorReductionNet(Regressor):
    """d2l §6.5, exercise 1: one `TensorReduction` layer, ``y_k = sum_ij W_ijk x_i x_j``."""

    def __init__(self, num_inputs: int = 20, num_outputs: int = 10, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(TensorReduction(num_inputs, num_outputs))


class FourierMLP(Regressor):
    """d2l §6.5, exercise 2: the inputs' leading Fourier coefficients (`FourierCoefficients`: n // 2 + 1 complex
    numbers as 2 reals each), then an MLP."""

    def __init__(self, num_inputs: int = 20, num_hiddens: int = 256, num_outputs: int = 10, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(FourierCoefficients(num_inputs),  # (batch, n) -> (batch, m = n // 2 + 1, 2)
                                 nn.Flatten(1),  # -> (batch, 2m): real and imaginary parts side by side
                                 nn.LazyLinear(num_hiddens), nn.ReLU(), nn.LazyLinear(num_outputs))


__all__ = ["Chimera", "CenteredMLP", "FixedHiddenNet", "FourierMLP", "MyLinearMLP", "MySequentialMLP", "ParallelMLP",
           "Regressor", "RepeatMLP", "TensorReductionNet", "TiedMLP"]
