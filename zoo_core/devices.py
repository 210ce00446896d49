"""Devices and numerics: which device a run uses, at which precision, and whether matmuls may use TF32."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from zoo_core.errors import ZooError

PRECISIONS = ("auto", "32", "bf16", "16")


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; unavailable ones are a
    `ZooError`. Under torchrun, ``auto``/``cuda`` mean this process's GPU, ``cuda:LOCAL_RANK``."""
    text = str(device)
    if text == "auto":
        if torch.cuda.is_available():
            text = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            text = "mps"
        else:
            text = "cpu"
    try:
        resolved = torch.device(text)
    except RuntimeError:
        raise ZooError(f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ZooError(f"device {text!r} was asked for, but CUDA is not available here "
                           f"(torch {torch.__version__}, {torch.cuda.device_count()} GPUs visible); use --device cpu")
        index = resolved.index if resolved.index is not None else local_rank
        if index >= torch.cuda.device_count():
            raise ZooError(f"device cuda:{index} does not exist: {torch.cuda.device_count()} GPU(s) visible")
        return torch.device("cuda", index)
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ZooError("device 'mps' was asked for, but MPS is not available here; use --device cpu")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ZooError(f"unsupported device {text!r}; use auto, cpu, cuda, cuda:N or mps")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is bf16 autocast on CUDA and fp32 elsewhere; fp16 needs CUDA (it needs loss scaling)."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ZooError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32"
    if precision == "16" and device.type != "cuda":
        raise ZooError(f"precision 16 needs CUDA (loss scaling); on {device.type} use bf16 or 32")
    return precision


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls and cuDNN convolutions on (training) or off (parity checks) inside the block, then as before."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def channels_last(X: Tensor) -> Tensor:
    """`X` (batch, channels, height, width) with channels-last strides.

    With one channel an NCHW tensor already is NHWC in memory, and ``contiguous(memory_format=channels_last)``
    returns it unchanged, strides included, so convolution libraries (which choose their layout from the strides)
    would stay in NCHW; viewing it through (batch, height, width, 1) gives the NHWC strides without a copy.
    """
    if X.shape[1] == 1:
        n, _, h, w = X.shape
        return X.reshape(n, h, w, 1).permute(0, 3, 1, 2)
    return X.contiguous(memory_format=torch.channels_last)
