"""Batch normalization (d2l §8.5): from scratch (`BatchNorm`, `BNLeNetScratch`) and with PyTorch's (`BNLeNet`).

Two fixes to the book's from-scratch layer, so that it behaves like `nn.BatchNorm2d` / `nn.BatchNorm1d`:

- The moving mean and variance are registered buffers. In the book they are plain tensor attributes: they are
  missing from ``state_dict()`` (a saved model forgets them), ``.to(device)`` does not move them, and an export bakes
  in whatever they were at export time without naming them.
- Training or prediction is ``self.training`` (``model.train()`` / ``model.eval()``), not ``torch.is_grad_enabled()``
  as in the book, where evaluating under ``no_grad`` in training mode (or exporting) silently switches modes.

The update is the book's and PyTorch's ``moving = (1 - momentum) * moving + momentum * batch`` with momentum 0.1 and
eps 1e-5. As in PyTorch, the batch is normalised with its biased variance and the moving variance is updated with
the unbiased one (the book uses the biased one for both; the difference is a factor n / (n - 1)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from zoo_modern_cnn.common import CNNClassifier


def batch_norm(X: Tensor, gamma: Tensor, beta: Tensor, moving_mean: Tensor, moving_var: Tensor, eps: float,
               momentum: float, training: bool) -> Tensor:
    """Normalise `X` (batch, features) or (batch, channels, h, w) per feature/channel, then scale and shift.

    In training, with the batch's statistics, and update `moving_mean`/`moving_var` in place; otherwise with them.
    """
    if not training:
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        assert X.dim() in (2, 4), f"batch norm needs 2-d (dense) or 4-d (conv) inputs, got shape {tuple(X.shape)}"
        dims = (0,) if X.dim() == 2 else (0, 2, 3)  # all but the feature/channel axis
        mean = X.mean(dim=dims, keepdim=True)        # (1, C) or (1, C, 1, 1), the buffers' shape
        var = ((X - mean) ** 2).mean(dim=dims, keepdim=True)
        X_hat = (X - mean) / torch.sqrt(var + eps)
        with torch.no_grad():  # statistics, not part of the graph
            n = X.numel() // X.shape[1]  # values per feature
            moving_mean.mul_(1 - momentum).add_(momentum * mean)
            moving_var.mul_(1 - momentum).add_(momentum * var * (n / max(n - 1, 1)))
    return gamma * X_hat + beta


class BatchNorm(nn.Module):
    """Batch norm over `num_features` features (`num_dims` 2, after a dense layer) or channels (4, after a conv).

    ``gamma`` (1s) and ``beta`` (0s) are learnt; ``moving_mean`` (0s) and ``moving_var`` (1s) are buffers.
    """

    def __init__(self, num_features: int, num_dims: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.eps, self.momentum = eps, momentum
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))

    def forward(self, X: Tensor) -> Tensor:
        # statistics in float32 even under bf16/fp16 autocast, where a variance in 8 mantissa bits is too coarse
        low = X.dtype in (torch.float16, torch.bfloat16)
        Y = batch_norm(X.float() if low else X, self.gamma, self.beta, self.moving_mean, self.moving_var, self.eps,
                       self.momentum, self.training)
        return Y.to(X.dtype) if low else Y


class BNLeNetScratch(CNNClassifier):
    """LeNet (§7.6, without the first convolution's padding) with a from-scratch `BatchNorm` after each convolution
    and dense layer, before the sigmoid."""

    def __init__(self, lr: float = 0.1, num_classes: int = 10, image_size: int = 28,
                 channels: Sequence[int] = (6, 16), num_hiddens: Sequence[int] = (120, 84)) -> None:
        super().__init__()
        self.save_hyperparameters()
        (c1, c2), (h1, h2) = channels, num_hiddens
        self.net = nn.Sequential(  # shapes for a (1, 28, 28) image
            nn.LazyConv2d(c1, kernel_size=5), BatchNorm(c1, num_dims=4), nn.Sigmoid(),  # (6, 24, 24)
            nn.AvgPool2d(kernel_size=2, stride=2),                                      # (6, 12, 12)
            nn.LazyConv2d(c2, kernel_size=5), BatchNorm(c2, num_dims=4), nn.Sigmoid(),  # (16, 8, 8)
            nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),                        # (16, 4, 4) -> 256
            nn.LazyLinear(h1), BatchNorm(h1, num_dims=2), nn.Sigmoid(),
            nn.LazyLinear(h2), BatchNorm(h2, num_dims=2), nn.Sigmoid(),
            nn.LazyLinear(num_classes))


class BNLeNet(CNNClassifier):
    """`BNLeNetScratch` with PyTorch's lazy batch-norm layers (same parameters, same eps and momentum)."""

    def __init__(self, lr: float = 0.1, num_classes: int = 10, image_size: int = 28,
                 channels: Sequence[int] = (6, 16), num_hiddens: Sequence[int] = (120, 84)) -> None:
        super().__init__()
        self.save_hyperparameters()
        (c1, c2), (h1, h2) = channels, num_hiddens
        self.net = nn.Sequential(
            nn.LazyConv2d(c1, kernel_size=5), nn.LazyBatchNorm2d(), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.LazyConv2d(c2, kernel_size=5), nn.LazyBatchNorm2d(), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
            nn.LazyLinear(h1), nn.LazyBatchNorm1d(), nn.Sigmoid(),
            nn.LazyLinear(h2), nn.LazyBatchNorm1d(), nn.Sigmoid(),
            nn.LazyLinear(num_classes))
