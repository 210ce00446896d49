"""Custom layers (d2l §6.5 and its exercises): each one exports to ONNX with parity."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CenteredLayer(nn.Module):
    """``X - X.mean()``: no parameters. The book centres over every element of the batch (``dim=None``); an int
    `dim` centres each example on its own (``dim=-1``), so an example's output does not depend on its batch."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, X: Tensor) -> Tensor:
        return X - (X.mean() if self.dim is None else X.mean(self.dim, keepdim=True))


class MyLinear(nn.Module):
    """A fully connected layer with ReLU from parameters: ``relu(X @ weight + bias)``, ``weight`` of shape
    ``(in_units, units)`` (the book's layout, transposed from ``nn.Linear``'s), initialised N(0, 1) as in the book.

    The forward uses the parameters themselves, never ``.data``, so gradients reach them. ``relu=False`` drops the
    activation (an output layer of a regression).
    """

    def __init__(self, in_units: int, units: int, relu: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_units, units))
        self.bias = nn.Parameter(torch.randn(units))
        self.relu = relu

    def forward(self, X: Tensor) -> Tensor:  # (..., in_units) -> (..., units)
        out = X @ self.weight + self.bias
        return F.relu(out) if self.relu else out

    def extra_repr(self) -> str:
        return f"in_units={self.weight.shape[0]}, units={self.weight.shape[1]}, relu={self.relu}"


class TensorReduction(nn.Module):
    """``y_k = sum_ij W_ijk x_i x_j`` for each example (d2l §6.5, exercise 1): a learned quadratic form per output.

    Computed as the flattened outer product ``x x^T`` (batch, in * in) times W viewed as (in * in, out): one matmul,
    which exports to ONNX as such (no einsum needed). W starts N(0, 1 / in^2) so outputs start O(|x|^2 / in).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_features, in_features, out_features) / in_features)

    def forward(self, X: Tensor) -> Tensor:  # (batch, in) -> (batch, out)
        outer = (X.unsqueeze(-1) * X.unsqueeze(-2)).flatten(-2)  # (batch, in * in): x_i x_j
        return outer @ self.weight.flatten(0, 1)  # (in * in, out)

    def extra_repr(self) -> str:
        i, _, o = self.weight.shape
        return f"in_features={i}, out_features={o}"


def dft_matrix(n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(n, n // 2 + 1, 2)``: x @ M[..., 0] and x @ M[..., 1] are the real and imaginary parts of the first
    n // 2 + 1 DFT coefficients of x. Angles are reduced mod n in integers and computed in float64, then cast."""
    t = torch.arange(n, dtype=torch.int64).unsqueeze(1)
    k = torch.arange(n // 2 + 1, dtype=torch.int64).unsqueeze(0)
    angle = 2 * math.pi * ((t * k) % n).double() / n  # (n, m); exp(-i angle) = cos - i sin
    return torch.stack([torch.cos(angle), -torch.sin(angle)], dim=-1).to(dtype)


class FourierCoefficients(nn.Module):
    """The leading half of the discrete Fourier coefficients of a real input, along its last dimension.

    For x of length n: ``X_k = sum_{t<n} x_t exp(-2 pi i k t / n)`` for ``k = 0, 1, ..., n // 2`` (n // 2 + 1
    coefficients: for a real x the others are their complex conjugates, ``X_{n-k} = conj(X_k)``). This is exactly
    ``torch.fft.rfft(x)`` (unnormalised). The output is real, ``(..., n // 2 + 1, 2)``, real and imaginary parts
    in the last dimension: ONNX Runtime has no complex outputs, and torch.fft does not export, so the transform is a
    matmul with a precomputed DFT matrix (a non-persistent buffer: recomputed, not saved).

    With `n` given, the matrix is built once and inputs of another length are an error; without, it is built per
    call for the input's length (dtype and device).
    """

    def __init__(self, n: int | None = None) -> None:
        super().__init__()
        self.n = n
        self.register_buffer("dft", None if n is None else dft_matrix(n).flatten(1), persistent=False)  # (n, 2m)

    def forward(self, X: Tensor) -> Tensor:  # (..., n) -> (..., n // 2 + 1, 2)
        n = X.shape[-1]
        if self.dft is None:
            dft = dft_matrix(n, X.dtype).flatten(1).to(X.device)
        elif n != self.n:
            raise ValueError(f"FourierCoefficients(n={self.n}) got inputs of shape {tuple(X.shape)}")
        else:
            dft = self.dft
        return (X @ dft).unflatten(-1, (n // 2 + 1, 2))

    def extra_repr(self) -> str:
        return f"n={self.n}"


__all__ = ["CenteredLayer", "FourierCoefficients", "MyLinear", "TensorReduction", "dft_matrix"]
