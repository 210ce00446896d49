"""ONNX export through the torch.export-based exporter, with the dynamic dimensions the spec names.

A spec's symbolic dimensions (``X: float32[batch, 1, 28, 28]``) become `torch.export.Dim`s of the same name, shared
across inputs, so the exported graph takes any batch size (and sequence length, for sequence models). The opset is
pinned and recorded, the weights are inside the file, and ``onnx.checker`` runs with ``full_check=True`` before the
file is renamed into place.

A model may have several graphs (`zoo_core.GraphSpec`: an encoder and a decoder step); each is exported on its own
with `export_graph`. Every symbolic dimension is traced at a size of at least 2 (sizes 0 and 1 let the exporter
specialise a dimension silently), each at a different size, and the export fails if the ONNX graph came out with a
dimension fixed that the spec declares symbolic: an exporter can do that without any error (nn.RNN models traced at
length 6 that ONNX Runtime then refuses at length 11). Parity runs at other sizes again (`parity_dims`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import re
import warnings
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zoo_core.artifacts import atomic_path
from zoo_core.errors import ZooError
from zoo_core.model import Model
from zoo_core.onnx_rnn import onnx_translations, route_recurrent_modules
from zoo_core.registry import GraphSpec, TensorSpec

DEFAULT_OPSET = 18
TRACE_BATCH_SIZE = 2  # export traces at this batch; parity checks run at another one
PARITY_BATCH_SIZE = 3


def _symbolic_dims(graph: GraphSpec) -> list[str]:
    """The graph's symbolic dimension names, ``batch`` first, then in order of appearance."""
    names: list[str] = []
    for spec in graph.inputs:
        names += [d for d in spec.shape if isinstance(d, str) and d not in names]
    return sorted(names, key=lambda d: d != "batch")


def trace_dims(graph: GraphSpec) -> dict[str, int]:
    """The sizes export traces at: batch 2, the other symbolic dimensions 3, 4, ... (all >= 2 and distinct, so that
    neither specialisation nor two dimensions of equal size can hide a dimension the graph fixed)."""
    others = [d for d in _symbolic_dims(graph) if d != "batch"]
    return {**({"batch": TRACE_BATCH_SIZE} if "batch" in _symbolic_dims(graph) else {}),
            **{d: 3 + i for i, d in enumerate(others)}}


def parity_dims(graph: GraphSpec) -> dict[str, int]:
    """The sizes parity checks at: batch 3, the other symbolic dimensions 4 more than traced (none equal to the
    traced sizes)."""
    traced = trace_dims(graph)
    return {d: PARITY_BATCH_SIZE if d == "batch" else size + 4 for d, size in traced.items()}


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
        # a copy of the table: each export registers its custom translations (zoo_core.onnx_rnn) into the registry
        # it gets, which must not pile up in the cached one
        registry = copy.copy(_TORCHLIB_REGISTRIES[key])
        registry.functions = {op: list(metas) for op, metas in registry.functions.items()}
        return registry

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


def concrete_graph(model: Model, graph: GraphSpec) -> GraphSpec:
    """`graph` with its fixed sizes taken from `model` as built: a spec declares them for its presets' shapes
    (``logits: float32[batch, 28]``), but ``--set`` can change them (another vocabulary, more hidden units).
    Symbolic dimensions stay symbolic. One forward pass of the graph module on its trace-size inputs.

    Raises:
        ZooError: an input or output has another rank than the spec declares.
    """
    args = tuple(model.graph_inputs(graph.name, trace_dims(graph)))
    module = model.graph_module(graph.name)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            outs = module(*args)
    finally:
        module.train(was_training)
    outs = (outs,) if isinstance(outs, torch.Tensor) else tuple(outs)

    def fit(specs: Sequence[TensorSpec], tensors: Sequence[torch.Tensor], kind: str) -> tuple[TensorSpec, ...]:
        if len(specs) != len(tensors):
            raise ZooError(f"graph {graph.name} of {type(model).__name__} gives {len(tensors)} {kind}s, its spec "
                           f"declares {len(specs)}")
        fitted = []
        for spec, tensor in zip(specs, tensors):
            if tensor.dim() != len(spec.shape):
                raise ZooError(f"graph {graph.name}: {kind} {spec.name} has shape {tuple(tensor.shape)}, its spec "
                               f"declares {spec}")
            shape = tuple(d if isinstance(d, str) else int(n) for d, n in zip(spec.shape, tensor.shape))
            fitted.append(TensorSpec(spec.name, spec.dtype, shape))
        return tuple(fitted)

    return dataclasses.replace(graph, inputs=fit(graph.inputs, args, "input"),
                               outputs=fit(graph.outputs, outs, "output"))


def export_onnx(model: Model, path: str | os.PathLike, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                *, opset: int = DEFAULT_OPSET, exporter: str = "dynamo") -> dict[str, Any]:
    """Export `model`'s forward pass (its graph ``model``) to `path`; see `export_graph`."""
    return export_graph(model, GraphSpec("model", tuple(inputs), tuple(outputs)), path, opset=opset,
                        exporter=exporter)


def export_graph(model: Model, graph: GraphSpec, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                 exporter: str = "dynamo") -> dict[str, Any]:
    """Export graph `graph` of `model` (`Model.graph_module`, in eval mode, on the CPU) to `path`, traced on
    `Model.graph_inputs` at `trace_dims`; returns what the manifest records of it.

    `exporter` is ``dynamo`` (torch.export) or, for a spec that says why it needs it, ``torchscript``.

    Raises:
        ZooError: the exporter failed, ``onnx.checker`` rejects the file, or the graph fixed a dimension that
            `graph` declares symbolic.
    """
    import onnx

    path = Path(path)
    model = model.cpu().eval()
    module = model.graph_module(graph.name).eval()
    dims = trace_dims(graph)
    args = tuple(model.graph_inputs(graph.name, dims))
    inputs, outputs = graph.inputs, graph.outputs
    if len(args) != len(inputs):
        raise ZooError(f"{type(model).__name__}.graph_inputs({graph.name!r}) gives {len(args)} tensors, its spec "
                       f"declares {len(inputs)} inputs")
    input_names, output_names = [s.name for s in inputs], [s.name for s in outputs]
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's business
        try:
            if exporter == "dynamo":
                # nn.RNN/GRU/LSTM as whole ops, so their time axis stays symbolic (see zoo_core.onnx_rnn)
                with _torchlib_registry_built_once(), route_recurrent_modules():
                    torch.onnx.export(module, args, str(tmp), dynamo=True, external_data=False, opset_version=opset,
                                      input_names=input_names, output_names=output_names,
                                      dynamic_shapes=dynamic_shapes(inputs), verbose=False,
                                      custom_translation_table=onnx_translations())
            else:
                axes = {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)}
                        for s in (*inputs, *outputs)}
                torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=opset,
                                  input_names=input_names, output_names=output_names, dynamic_axes=axes)
        except Exception as e:  # noqa: BLE001 - exporter failures come in many types
            what = type(model).__name__ + ("" if graph.name == "model" else f"'s graph {graph.name}")
            detail = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split())[:500]  # no terminal colour codes
            raise ZooError(f"ONNX export of {what} failed: {type(e).__name__}: {detail}") from e
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as e:
            raise ZooError(f"the exported ONNX model fails onnx.checker: {' '.join(str(e).split())[:500]}") from e
        io = graph_io(tmp)
        _check_dynamic(graph, io, dims)
    return {"file": path.name, "opset": opset, "exporter": "torch.export (dynamo)" if exporter == "dynamo"
            else "torchscript", "trace_batch_size": dims.get("batch", TRACE_BATCH_SIZE), "trace_dims": dims, **io}


def _check_dynamic(graph: GraphSpec, io: dict[str, list[dict[str, Any]]], dims: dict[str, int]) -> None:
    """Fail if the ONNX graph has a fixed size where `graph` declares a symbolic dimension: the exporter does that
    silently when the model's code specialises a dimension (a loop over time steps, a shape read as an int)."""
    for kind, specs in (("input", graph.inputs), ("output", graph.outputs)):
        found = {v["name"]: v for v in io[kind + "s"]}
        for spec in specs:
            value = found.get(spec.name)
            if value is None and kind == "input":
                continue  # an input the graph never reads (a valid-length the book's GRU encoder ignores) may go
            if value is None:
                raise ZooError(f"graph {graph.name}: the ONNX file has no output {spec.name!r} (it has "
                               f"{', '.join(found) or 'none'})")
            shape = value["shape"]
            if len(shape) != len(spec.shape):
                raise ZooError(f"graph {graph.name}: {kind} {spec.name} has shape {shape} in the ONNX file, the spec "
                               f"declares {spec}")
            for axis, (declared, got) in enumerate(zip(spec.shape, shape)):
                if isinstance(declared, str) and not isinstance(got, str):
                    raise ZooError(
                        f"graph {graph.name}: dimension {declared!r} (axis {axis}) of {kind} {spec.name} came out "
                        f"fixed at {got} in the ONNX graph (traced at {dims.get(declared, '?')}), so ONNX Runtime "
                        f"would refuse other sizes; the model's code specialises it (a Python loop over it, or its "
                        f"size used as a number): export a step graph instead, or make the code shape-generic")
