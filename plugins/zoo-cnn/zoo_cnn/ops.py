"""The book's convolution operations from scratch (d2l §7.2-7.5), and the output-shape arithmetic of §7.3.

Each is the book's definition; where the book loops over output positions in Python, these loop over the (few) kernel
or window offsets and move whole shifted views of the input instead: the same sums, a few tensor operations rather
than one Python iteration per output pixel. All are differentiable, and accept leading batch dimensions on `X`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

IntPair = int | Sequence[int]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _out_size(X: Tensor, kh: int, kw: int, what: str) -> tuple[int, int]:
    h, w = X.shape[-2] - kh + 1, X.shape[-1] - kw + 1
    if h < 1 or w < 1:
        raise ValueError(f"{what} {kh}x{kw} does not fit in an input of {X.shape[-2]}x{X.shape[-1]}")
    return h, w


def corr2d(X: Tensor, K: Tensor) -> Tensor:
    """Two-dimensional cross-correlation (d2l §7.2.1): ``Y[i, j] = sum_ab X[i + a, j + b] * K[a, b]``.

    X: (..., h, w), K: (kh, kw) -> (..., h - kh + 1, w - kw + 1). No padding, stride 1, as in the book.
    """
    kh, kw = K.shape
    h, w = _out_size(X, kh, kw, "kernel")
    # tap (a, b) of the kernel weighs the input shifted by (a, b): kh * kw whole-image products
    return sum(K[a, b] * X[..., a : a + h, b : b + w] for a in range(kh) for b in range(kw))


def corr2d_multi_in(X: Tensor, K: Tensor) -> Tensor:
    """Several input channels (d2l §7.4.1): cross-correlate each channel with its kernel, then sum.

    X: (c_i, h, w), K: (c_i, kh, kw) -> (h - kh + 1, w - kw + 1).
    """
    if X.shape[0] != K.shape[0]:
        raise ValueError(f"X has {X.shape[0]} channels but K has kernels for {K.shape[0]}")
    return sum(corr2d(x, k) for x, k in zip(X, K))


def corr2d_multi_in_out(X: Tensor, K: Tensor) -> Tensor:
    """Several output channels (d2l §7.4.2): one multi-input correlation per output kernel, stacked.

    X: (c_i, h, w), K: (c_o, c_i, kh, kw) -> (c_o, h - kh + 1, w - kw + 1).
    """
    return torch.stack([corr2d_multi_in(X, k) for k in K], 0)


def corr2d_multi_in_out_1x1(X: Tensor, K: Tensor) -> Tensor:
    """A 1x1 convolution as one matrix product (d2l §7.4.3): a fully connected layer applied at every pixel.

    X: (c_i, h, w), K: (c_o, c_i, 1, 1) -> (c_o, h, w).
    """
    c_i, h, w = X.shape
    c_o = K.shape[0]
    return (K.reshape(c_o, c_i) @ X.reshape(c_i, h * w)).reshape(c_o, h, w)


def pool2d(X: Tensor, pool_size: IntPair, mode: str = "max") -> Tensor:
    """Maximum or average pooling over ``pool_size`` windows, stride 1, no padding (d2l §7.5.1).

    X: (..., h, w) -> (..., h - ph + 1, w - pw + 1).
    """
    ph, pw = _pair(pool_size, "pool_size")
    h, w = _out_size(X, ph, pw, "pool window")
    windows = [X[..., a : a + h, b : b + w] for a in range(ph) for b in range(pw)]
    if mode == "max":
        return functools.reduce(torch.maximum, windows)
    if mode == "avg":
        return sum(windows) / len(windows)
    raise ValueError(f"unknown pooling mode {mode!r}; use 'max' or 'avg'")


class Conv2D(nn.Module):
    """The book's convolutional layer (d2l §7.2.3): a learnt kernel and a scalar bias, ``corr2d(x, weight) + bias``.

    The kernel starts uniform in [0, 1) and the bias at 0, as in the book.
    """

    def __init__(self, kernel_size: IntPair) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(_pair(kernel_size, "kernel_size")))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:  # (..., h, w) -> (..., h - kh + 1, w - kw + 1)
        return corr2d(x, self.weight) + self.bias


def conv_output_shape(input_size: IntPair, kernel_size: IntPair, padding: IntPair = 0, stride: IntPair = 1,
                      dilation: IntPair = 1) -> tuple[int, int]:
    """Height and width of a convolution's (or pooling's) output, as `nn.Conv2d` computes them (d2l §7.3).

    Per dimension: ``floor((n + 2p - d * (k - 1) - 1) / s) + 1``, where `padding` p is added on both sides. With
    ``d = 1`` this is the book's ``floor((n - k + p_total + s) / s)``. A kernel that does not fit is a ValueError.
    """
    n, k, p, s, d = (_pair(v, name) for v, name in ((input_size, "input_size"), (kernel_size, "kernel_size"),
                                                    (padding, "padding"), (stride, "stride"), (dilation, "dilation")))
    out = []
    for i in range(2):
        if n[i] < 1 or k[i] < 1 or s[i] < 1 or d[i] < 1 or p[i] < 0:
            raise ValueError(f"sizes, kernel, stride and dilation must be positive and padding non-negative; got "
                             f"input {n}, kernel {k}, padding {p}, stride {s}, dilation {d}")
        span = d[i] * (k[i] - 1) + 1  # the dilated kernel's extent
        if n[i] + 2 * p[i] < span:
            raise ValueError(f"a kernel spanning {span} does not fit in {n[i]} + 2 * {p[i]} padding")
        out.append((n[i] + 2 * p[i] - span) // s[i] + 1)
    return out[0], out[1]


__all__ = ["Conv2D", "conv_output_shape", "corr2d", "corr2d_multi_in", "corr2d_multi_in_out",
           "corr2d_multi_in_out_1x1", "pool2d"]
