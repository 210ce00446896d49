"""ONNX export through the torch.export-based exporter, with the dynamic dimensions the spec names.

A spec's symbolic dimensions (``X: float32[batch, 1, 28, 28]``) become `torch.export.Dim`s of the same name, shared
across inputs, so the exported graph takes any batch size (and sequence length, for sequence models). The opset is
pinned and recorded, the weights are inside the file, and ``onnx.checker`` runs with ``full_check=True`` before the
file is renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zoo_core.artifacts import atomic_path
from zoo_core.errors import ZooError
from zoo_core.model import Model
from zoo_core.registry import TensorSpec

DEFAULT_OPSET = 18
TRACE_BATCH_SIZE = 2  # export traces at this batch; parity checks run at another one


def dynamic_shapes(specs: Sequence[TensorSpec]) -> tuple[dict[int, Any] | None, ...]:
    """torch.export dynamic shapes for inputs declared by `specs`: one `Dim` per symbolic dimension name."""
    dims: dict[str, Any] = {}
    shapes = []
    for spec in specs:
        axes = {i: dims.setdefault(d, torch.export.Dim(d, min=1)) for i, d in enumerate(spec.shape)
                if isinstance(d, str)}
        shapes.append(axes or None)
    return tuple(shapes)


_TORCHLIB_REGISTRIES: dict[Any, Any] = {}


@contextlib.contextmanager
def _torchlib_registry_built_once() -> Iterator[None]:
    """Build torch's ATen-to-ONNX function table once per opset and process, not once per export.

    ``torch.onnx.export(dynamo=True)`` rebuilds it every call (about 2 s here: a third of a small model's export,
    multiplied by every model of the contract suite). It is a private API: if it moves, exports just take longer.
    """
    try:
        from torch.onnx._internal.exporter import _registration

        original = _registration.ONNXRegistry.__dict__["from_torchlib"]
    except (ImportError, KeyError):
        yield
        return

    def from_torchlib(cls: type, *args: Any, **kwargs: Any) -> Any:
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in _TORCHLIB_REGISTRIES:
            _TORCHLIB_REGISTRIES[key] = original.__func__(cls, *args, **kwargs)
        return _TORCHLIB_REGISTRIES[key]

    _registration.ONNXRegistry.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        _registration.ONNXRegistry.from_torchlib = original


def graph_io(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """Names, shapes (symbolic dims by name) and dtypes of an ONNX file's graph inputs and outputs."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(value: Any) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return {"name": value.name, "dtype": dtype,
                "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim]}

    return {"inputs": [describe(v) for v in graph.input], "outputs": [describe(v) for v in graph.output]}


def export_onnx(model: Model, path: str | os.PathLike, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                *, opset: int = DEFAULT_OPSET, exporter: str = "dynamo") -> dict[str, Any]:
    """Export `model` (in eval mode, on the CPU) to `path`; returns what the manifest records of it.

    `exporter` is ``dynamo`` (torch.export) or, for a spec that says why it needs it, ``torchscript``.
    """
    import onnx

    path = Path(path)
    model = model.cpu().eval()
    args = tuple(model.example_inputs(TRACE_BATCH_SIZE))
    if len(args) != len(inputs):
        raise ZooError(f"{type(model).__name__}.example_inputs() gives {len(args)} tensors, its spec declares "
                       f"{len(inputs)} inputs")
    input_names, output_names = [s.name for s in inputs], [s.name for s in outputs]
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's business
        try:
            if exporter == "dynamo":
                with _torchlib_registry_built_once():
                    torch.onnx.export(model, args, str(tmp), dynamo=True, external_data=False, opset_version=opset,
                                      input_names=input_names, output_names=output_names,
                                      dynamic_shapes=dynamic_shapes(inputs), verbose=False)
            else:
                axes = {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)}
                        for s in (*inputs, *outputs)}
                torch.onnx.export(model, args, str(tmp), dynamo=False, opset_version=opset,
                                  input_names=input_names, output_names=output_names, dynamic_axes=axes)
        except Exception as e:  # noqa: BLE001 - exporter failures come in many types
            raise ZooError(f"ONNX export of {type(model).__name__} failed: {type(e).__name__}: "
                           f"{' '.join(str(e).split())[:500]}") from e
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as e:
            raise ZooError(f"the exported ONNX model fails onnx.checker: {' '.join(str(e).split())[:500]}") from e
        io = graph_io(tmp)
    return {"file": path.name, "opset": opset, "exporter": "torch.export (dynamo)" if exporter == "dynamo"
            else "torchscript", "trace_batch_size": TRACE_BATCH_SIZE, **io}
