"""Devices and numerics: which device a run uses, at which precision, whether matmuls may use TF32, and how the CPU's
memory allocator serves a training process."""

from __future__ import annotations

import contextlib
import ctypes
import sys
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


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU multiplies bf16 in hardware (x86: the ``avx512_bf16`` or ``amx_bf16`` flag of Linux's
    ``/proc/cpuinfo``, or of `cpuinfo`'s text); None where that cannot be told here (another system or architecture).

    Without it oneDNN emulates bf16 products, and ``--precision bf16`` is slower than float32. Measured on a 2-core
    AMD EPYC (Zen 4), one thread, (1000, 256) x (256, 256): 212 GFLOP/s in bf16 against 99 in float32 with its bf16
    instructions; with them masked (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``), 26 against 56 (the machine busier); with
    AVX2 only, 1.7 against 59."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    if flags is None:  # not an x86 kernel's cpuinfo (ARM says "Features")
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


def keep_freed_memory() -> bool:
    """Have the C library's malloc keep freed memory for reuse rather than hand it back to the system (glibc only).

    Why: glibc serves each allocation over its mmap threshold (128 kB, rising with use to at most 32 MB) with a fresh
    mapping, unmaps it on free, and trims the heap's free top; a training step on the CPU makes and frees the same
    large tensors every step, so each of them is paid again in page faults. Measured on this project's 2-core CPU at
    one thread (CPU time per training step of the book presets, 30 steps): ``lstm-lm`` 78-81 ms with 9,300-11,400
    page faults a step, 53-56 ms with ~20; ``deep-rnn-lm`` 116-126 against 107-108 ms; the book's ViT 1.45 against
    1.05 s. PyTorch's CPU tuning guide swaps in jemalloc or tcmalloc for the same reason. The price: the process
    keeps its peak memory until it ends, which suits a training run. `Trainer.fit` calls it for CPU training.
    Returns whether it took effect (False off Linux, or on a C library without ``mallopt``, such as musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def denormals_flushed() -> bool:
    """Whether this thread's float arithmetic flushes subnormal numbers (below 1.18e-38 in float32) to zero: a product
    of 1e-30 and 1e-10 reads 0 when it does."""
    return (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() == 0.0


def _restart_openmp_threads() -> bool:
    """Have the OpenMP runtime that runs PyTorch's CPU kernels end its worker threads (OpenMP 5.0's
    ``omp_pause_resource_all(omp_pause_hard)``), so that the next parallel region starts new ones, which inherit the
    calling thread's floating-point control register. Returns whether a runtime (libgomp, libomp or libiomp5) did."""
    try:
        pause = ctypes.CDLL(None).omp_pause_resource_all  # the runtime, if loaded into the global namespace
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no global namespace to open
        pause = None
        try:
            with open("/proc/self/maps") as maps:  # else the one torch loaded privately (torch/lib/libgomp.so.1)
                paths = {line.split()[-1] for line in maps if "omp" in line.rsplit("/", 1)[-1] and ".so" in line}
        except OSError:
            paths = set()
        for path in sorted(paths):
            try:
                pause = ctypes.CDLL(path).omp_pause_resource_all
                break
            except (OSError, AttributeError):
                continue
    if pause is None:
        return False
    pause.restype, pause.argtypes = ctypes.c_int, [ctypes.c_int]
    omp_pause_hard = 2
    return pause(omp_pause_hard) == 0


@contextlib.contextmanager
def flush_denormals() -> Iterator[bool]:
    """Flush subnormal floats to zero on every CPU thread inside the block (x86's FTZ and DAZ; ARM's FZ), then restore
    the mode found on entry. Yields whether the mode is on inside (False where the CPU cannot flush).

    Why: a CPU computes with subnormal operands tens of times slower than with normal ones, and training makes them:
    the softmax's backward gives the book Transformer's attention gradients values under 1e-38 (1-2% of the gradient
    entering the self-attention's projections, 0.13% of all the operands of a step's matrix products), and the
    products that read them ran at 23-60 instead of ~100 GFLOP/s here. Flushing them took the book preset's training
    step from 143.5 to 108.7 ms (CPU time, one thread, medians of 3 fresh processes each; `benchmarks/denormals.py`).
    The GRU translation models have none, and run as fast either way. A subnormal is below 2^-126: as zero it changes
    no training figure beyond the noise of rounding. TensorFlow flushes them by default on the CPU for the same reason.
    `Trainer.fit` runs CPU training inside this block; the manifest's ``train.denormals_flushed`` records it.

    ``torch.set_flush_denormal`` sets the calling thread only, and OpenMP's worker threads keep the mode they started
    with (measured: at 2 threads half of a product's subnormals stayed), so the workers are restarted on entry and on
    exit (`_restart_openmp_threads`), and start again with the new mode.
    """
    before = denormals_flushed()
    if before:
        yield True
        return
    if not torch.set_flush_denormal(True):
        yield False
        return
    _restart_openmp_threads()
    try:
        yield True
    finally:
        torch.set_flush_denormal(False)
        _restart_openmp_threads()
