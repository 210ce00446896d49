"""File I/O (d2l §6.6) in safetensors: no pickle, so loading a file never runs code.

- `save_tensors` / `load_tensors`: a tensor, a list of tensors or a dict of tensors, given back as the same type.
- `load_submodule`: one sub-block's parameters, from the safetensors file of a whole model (`zoo_core.save_weights`
  or ``safetensors.torch.save_model``), into another network; missing and unexpected keys reported by name.

A whole model (architecture + parameters) goes through the registry instead: its spec name and hparams rebuild it,
`zoo_core.load_weights` fills it (``zoo export`` / ``zoo verify`` do this from a run's manifest).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from zoo_core import IntegrityError, atomic_path

Tensors = Union[Tensor, list[Tensor], dict[str, Tensor]]
_KIND = "zoo_builders.kind"  # metadata key: which container the file holds


def save_tensors(path: str | os.PathLike, obj: Tensors) -> Path:
    """Write a tensor, a list of tensors or a dict (str keys) of tensors to `path` in safetensors format.

    The file is written under a temporary name and renamed into place, so a crash never leaves half a file.
    """
    if isinstance(obj, Tensor):
        kind, named = "tensor", {"tensor": obj}
    elif isinstance(obj, (list, tuple)):
        kind, named = "list", {str(i): t for i, t in enumerate(obj)}
    elif isinstance(obj, dict):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise TypeError(f"save_tensors: dict keys must be strings, got {bad[0]!r}")
        kind, named = "dict", dict(obj)
    else:
        raise TypeError(f"save_tensors takes a tensor, a list or a dict of tensors, got {type(obj).__name__}")
    for key, value in named.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"save_tensors: item {key!r} is a {type(value).__name__}, not a tensor")
    # safetensors refuses tensors sharing memory (views, the same tensor twice): give each its own copy then
    seen: set[int] = set()
    out = {}
    for key, t in named.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[key] = t.clone() if ptr in seen and t.numel() else t
        seen.add(ptr)
    path = Path(path)
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(out, str(tmp), metadata={_KIND: kind})
    return path


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> Tensors:
    """Read what `save_tensors` wrote: a tensor, a list or a dict, as it was saved (on `device`)."""
    try:
        with safetensors.safe_open(str(path), framework="pt", device=str(device)) as f:
            kind = (f.metadata() or {}).get(_KIND, "dict")  # a plain safetensors file reads as a dict
            named = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (safetensors.SafetensorError, OSError) as e:
        raise IntegrityError(f"{path} is not a readable safetensors file: {' '.join(str(e).split())}") from None
    if kind == "tensor":
        return named["tensor"]
    if kind == "list":
        return [named[str(i)] for i in range(len(named))]
    return named


def load_submodule(model: nn.Module, name: str, path: str | os.PathLike, *, into: str | None = None,
                   strict: bool = True) -> tuple[list[str], list[str]]:
    """Load the sub-block `name` of a saved model (the tensors under ``name.`` in `path`) into `model`.

    The tensors go into ``model.get_submodule(into)``, by default the sub-block of the same name (``into=""``: into
    `model` itself, e.g. a new network that is just that block). Only that sub-block changes. Tied tensors, which
    ``save_model`` stores once, are found under the name they were kept as. Returns the (missing, unexpected) keys,
    each named as in the file (``name.key``); with `strict`, any of them, or a tensor whose shape does not fit,
    is an `IntegrityError` naming them.
    """
    target = model.get_submodule(name if into is None else into)
    prefix = f"{name}." if name else ""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            aliases = f.metadata() or {}  # save_model: {dropped duplicate name: the name it was kept as}
            wanted = target.state_dict()
            found = {}
            for key in wanted:
                stored = prefix + key
                stored = stored if stored in keys else aliases.get(stored, stored)
                if stored in keys:
                    found[key] = f.get_tensor(stored)
            extra = sorted(k for k in keys | set(aliases) if k.startswith(prefix) and k[len(prefix):] not in wanted)
    except (safetensors.SafetensorError, OSError) as e:
        raise IntegrityError(f"{path} is not a readable safetensors file: {' '.join(str(e).split())}") from None
    if not found and not any(k.startswith(prefix) for k in keys | set(aliases)):
        roots = sorted({k.split(".")[0] for k in keys})
        raise IntegrityError(f"{path} has no tensors under {name!r}; its top-level names are: {', '.join(roots)}")
    missing = sorted(prefix + k for k in wanted if k not in found)
    bad_shapes = [f"{prefix}{k} is {tuple(t.shape)} in the file, {tuple(wanted[k].shape)} in the model"
                  for k, t in found.items() if t.shape != wanted[k].shape]
    if bad_shapes or (strict and (missing or extra)):
        parts = bad_shapes + ([f"missing keys {', '.join(missing)}"] if missing else []) + (
            [f"unexpected keys {', '.join(extra)}"] if extra else [])
        raise IntegrityError(f"{path}: sub-block {name!r} does not fit {type(target).__name__}: {'; '.join(parts)}")
    target.load_state_dict(found, strict=False)
    return missing, extra


__all__ = ["load_submodule", "load_tensors", "save_tensors"]
