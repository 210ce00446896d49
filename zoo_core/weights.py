"""Weights in safetensors: never pickle, tied weights handled, key mismatches reported by name.

`safetensors.torch.save_model`/`load_model` already deduplicate shared tensors (the book ties weights in chapter 6)
and re-tie them on load; this module adds atomic writes, zoo metadata, and one-line errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
from torch import nn

from zoo_core.artifacts import atomic_path
from zoo_core.errors import IntegrityError


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write `model`'s state dict to `path` (atomically); `metadata` values are stored as JSON strings."""
    path = Path(path)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        safetensors.torch.save_model(model, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata stored in a safetensors file."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (safetensors.SafetensorError, OSError) as e:
        raise IntegrityError(f"{path} is not a readable safetensors file: {' '.join(str(e).split())}") from None


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load `path` into `model` (in place); returns (missing, unexpected) keys, an `IntegrityError` if `strict` and
    any, or if the file is corrupt or a tensor's shape does not fit."""
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{path} does not exist")
    device = next((p.device for p in model.parameters()), "cpu")
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(path), strict=False, device=str(device))
    except (safetensors.SafetensorError, OSError) as e:
        raise IntegrityError(f"{path} is not a readable safetensors file: {' '.join(str(e).split())}") from None
    except RuntimeError as e:  # shape mismatches, from load_state_dict
        raise IntegrityError(f"{path} does not fit {type(model).__name__}: {' '.join(str(e).split())}") from None
    missing, unexpected = sorted(missing), sorted(unexpected)
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append("missing keys " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected keys " + ", ".join(unexpected))
        raise IntegrityError(f"{path} does not fit {type(model).__name__}: {'; '.join(parts)}")
    return missing, unexpected
