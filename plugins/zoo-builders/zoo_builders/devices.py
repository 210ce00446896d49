"""GPUs (d2l §6.7): pick a device that exists, and move batches to it.

``zoo train --device`` resolves devices for training (`zoo_core.resolve_device`, which fails clearly when CUDA is
asked for and absent); these are the book's forgiving helpers, which fall back to the CPU.
"""

from __future__ import annotations

from typing import Any

import torch


def try_gpu(i: int = 0) -> torch.device:
    """``cuda:i`` if that GPU exists, else the CPU."""
    if torch.cuda.device_count() >= i + 1:
        return torch.device(f"cuda:{i}")
    return torch.device("cpu")


def try_all_gpus() -> list[torch.device]:
    """Every GPU, ``[cuda:0, cuda:1, ...]``, or ``[cpu]`` where there is none."""
    return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())] or [torch.device("cpu")]


def to_device(obj: Any, device: torch.device | str) -> Any:
    """`obj` with every tensor in it (also inside tuples, lists and dicts) moved to `device`."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


__all__ = ["to_device", "try_all_gpus", "try_gpu"]
