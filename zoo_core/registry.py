"""Model and dataset specs, the registry that holds them, and the lookups the CLI and Python users share.

A `ModelSpec` is everything `zoo list` and `zoo info` show, declared without importing torch or the model: the
builder is a ``"module:Class"`` string, and the figures that need a built model (parameter count, input and output
shapes) are declared per preset and checked against the built model by the contract tests, the way torchvision
checks its weights' ``num_params`` metadata.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from zoo_core.errors import UnknownNameError, ZooError, unknown

if TYPE_CHECKING:
    from zoo_core.data import DataModule
    from zoo_core.model import Model

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_TENSOR = re.compile(r"^\s*([A-Za-z_]\w*)\s*:\s*(\w+)\s*\[(.*)\]\s*$")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "bool", "uint8")


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor with symbolic dimensions, written ``"X: float32[batch, 1, 28, 28]"``.

    A dimension is an int (fixed) or a name (dynamic in the ONNX export: ``batch``, ``seq`` ...).
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def parse(cls, text: str | TensorSpec) -> TensorSpec:
        if isinstance(text, TensorSpec):
            return text
        match = _TENSOR.match(text)
        if not match:
            raise ValueError(f"tensor spec {text!r} is not of the form 'name: dtype[dim, ...]'")
        name, dtype, dims = match.groups()
        if dtype not in DTYPES:
            raise ValueError(f"tensor spec {text!r}: unknown dtype {dtype!r} (one of {', '.join(DTYPES)})")
        parts = [d.strip() for d in dims.split(",")] if dims.strip() else []
        bad = [d for d in parts if not (d.isdigit() or d.isidentifier())]
        if bad:
            raise ValueError(f"tensor spec {text!r}: dimension {bad[0]!r} is neither a size nor a name")
        return cls(name, dtype, tuple(int(d) if d.isdigit() else d for d in parts))

    def concrete_shape(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with symbolic dimensions replaced by ``dims[name]``."""
        return tuple(dims[d] if isinstance(d, str) else d for d in self.shape)

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype}[{', '.join(map(str, self.shape))}]"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def _tensor_specs(specs: Iterable[str | TensorSpec] | None) -> tuple[TensorSpec, ...] | None:
    return None if specs is None else tuple(TensorSpec.parse(s) for s in specs)


GRAPH_ROLES = ("forward", "encoder", "step")


@dataclass(frozen=True)
class GraphSpec:
    """One exportable graph of a model, written to ``<name>.onnx`` (DESIGN §4: models with several graphs).

    Most models have one graph, ``model``: their forward pass. Generation models add an ``encoder`` graph and/or a
    one-step decoder graph, which `zoo_core.decoding` drives on PyTorch or ONNX Runtime alike.

    Attributes:
        name: the graph's name and file stem (``model``, ``encoder``, ``decoder_step``).
        inputs, outputs: tensor specs, as for `ModelSpec`. Symbolic dimensions stay dynamic in the export.
        role: ``forward`` (a whole forward pass), ``encoder`` (its outputs feed a step graph's inputs of the same
            names), or ``step`` (one decoding step).
        state: for a step graph, the inputs carried from step to step; ``outputs[1:1 + len(state)]`` are their new
            values, in this order. A step graph's first input is ``tokens: int64[batch]``, its first output
            ``logits: float32[batch, vocab]``; its other inputs are memory (constant while decoding); outputs after
            the state are extras (attention weights). Every state and memory tensor is batch-major.
        summary: one line for ``zoo info`` (say here why a model has no forward graph, if it has none).
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    role: str = "forward"
    state: tuple[str, ...] = ()
    summary: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name.replace("_", "-")):
            raise ValueError(f"graph name {self.name!r} must be lower-case letters, digits, '-' and '_'")
        object.__setattr__(self, "inputs", _tensor_specs(self.inputs))
        object.__setattr__(self, "outputs", _tensor_specs(self.outputs))
        object.__setattr__(self, "state", tuple(self.state))
        if self.role not in GRAPH_ROLES:
            raise ValueError(f"graph {self.name!r}: role must be one of {', '.join(GRAPH_ROLES)}")
        if not self.inputs or not self.outputs:
            raise ValueError(f"graph {self.name!r} must declare its inputs and outputs")
        names = [t.name for t in self.inputs]
        all_names = names + [t.name for t in self.outputs]
        repeated = sorted({n for n in all_names if all_names.count(n) > 1})
        if repeated:  # ONNX defines each value once: an output named like an input is an invalid file
            raise ValueError(f"graph {self.name!r}: names {repeated} are used twice among its inputs and outputs "
                             f"(name a new state differently, e.g. H_next)")
        unknown_state = [s for s in self.state if s not in names]
        if unknown_state:
            raise ValueError(f"graph {self.name!r}: state {unknown_state} are not among its inputs {names}")
        if self.role == "step":
            if self.inputs[0].name != "tokens" or self.outputs[0].name != "logits":
                raise ValueError(f"step graph {self.name!r}: the first input must be 'tokens' and the first output "
                                 f"'logits'")
            if len(self.outputs) < 1 + len(self.state):
                raise ValueError(f"step graph {self.name!r}: {len(self.state)} state inputs need as many outputs "
                                 f"after 'logits'")
        elif self.state:
            raise ValueError(f"graph {self.name!r}: only step graphs carry state")

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "file": self.file, "role": self.role,
                               "inputs": [t.to_json() for t in self.inputs],
                               "outputs": [t.to_json() for t in self.outputs]}
        if self.state:
            out["state"] = list(self.state)
        if self.summary:
            out["summary"] = self.summary
        return out


def _graph_specs(graphs: Iterable[GraphSpec] | None) -> tuple[GraphSpec, ...] | None:
    if graphs is None:
        return None
    graphs = tuple(graphs)
    names = [g.name for g in graphs]
    if len(set(names)) != len(names):
        raise ValueError(f"graph names must be unique, got {names}")
    return graphs


@dataclass(frozen=True)
class Preset:
    """A named configuration of a model: its hyper-parameters, its data's, and the trainer's.

    ``model`` and ``data`` are constructor arguments of the model and the `DataModule`; ``train`` are `Trainer`
    arguments (``max_epochs``, ``gradient_clip_val`` ...). ``num_params`` is the parameter count of the model built
    with this preset; ``inputs``/``outputs`` (and ``graphs``) override the spec's where the preset changes shapes
    (smaller images, other vocabulary sizes).
    """

    model: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    num_params: int | None = None
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None
    summary: str = ""
    graphs: tuple[GraphSpec, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _tensor_specs(self.inputs))
        object.__setattr__(self, "outputs", _tensor_specs(self.outputs))
        object.__setattr__(self, "graphs", _graph_specs(self.graphs))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": dict(self.model), "data": dict(self.data), "train": dict(self.train),
                               "num_params": self.num_params}
        if self.summary:
            out["summary"] = self.summary
        return out


@dataclass(frozen=True)
class Tolerance:
    """ONNX Runtime vs PyTorch parity tolerance; a looser one than the default needs a ``reason``."""

    atol: float = 1e-4
    rtol: float = 1e-3
    reason: str = ""


REQUIRED_PRESETS = ("book", "tiny")
ONNX_EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about a model without importing it.

    Attributes:
        name: registered name, lower-case and hyphenated (``softmax-scratch``).
        builder: ``"package.module:Class"`` of a `zoo_core.Model` subclass, imported only to build.
        chapter, section: where the book introduces the model (``4``, ``"4.4"``).
        summary: one line for ``zoo list``.
        task: ``classification``, ``regression``, ``language-modeling`` ...
        dataset: the registered dataset name it trains on.
        presets: at least ``book`` (the book's recipe) and ``tiny`` (seconds on a laptop CPU, for tests).
        inputs, outputs: tensor specs (``"X: float32[batch, 1, 28, 28]"``), the model's forward signature.
        tags: free-form labels (``scratch``, ``concise`` ...).
        parity: ONNX Runtime parity tolerance (default fp32 ``atol=1e-4, rtol=1e-3``).
        onnx_exporter: ``dynamo`` (torch.export; the default) or ``torchscript`` (the legacy exporter, only with
            ``onnx_reason`` saying why the model cannot go through torch.export).
        graphs: the graphs `zoo export` writes (`GraphSpec`); default: one forward graph ``model`` with the
            spec's inputs and outputs. Generation models declare their encoder and step graphs here.
        plugin: the distribution that registered it, filled in by the registry.
    """

    name: str
    builder: str
    chapter: int
    section: str
    summary: str
    task: str
    dataset: str
    presets: Mapping[str, Preset]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    tags: tuple[str, ...] = ()
    parity: Tolerance = Tolerance()
    onnx_exporter: str = "dynamo"
    onnx_reason: str = ""
    graphs: tuple[GraphSpec, ...] = ()
    plugin: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"model name {self.name!r} must be lower-case letters, digits and hyphens")
        if ":" not in self.builder:
            raise ValueError(f"model {self.name!r}: builder {self.builder!r} must be 'package.module:Class'")
        missing = [p for p in REQUIRED_PRESETS if p not in self.presets]
        if missing:
            raise ValueError(f"model {self.name!r} has no {' or '.join(missing)} preset")
        if self.onnx_exporter not in ONNX_EXPORTERS:
            raise ValueError(f"model {self.name!r}: onnx_exporter must be one of {ONNX_EXPORTERS}")
        if self.onnx_exporter != "dynamo" and not self.onnx_reason:
            raise ValueError(f"model {self.name!r}: the {self.onnx_exporter} exporter needs an onnx_reason")
        if self.parity != Tolerance() and not self.parity.reason:
            raise ValueError(f"model {self.name!r}: a non-default parity tolerance needs a reason")
        object.__setattr__(self, "inputs", _tensor_specs(self.inputs))
        object.__setattr__(self, "outputs", _tensor_specs(self.outputs))
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "graphs", _graph_specs(self.graphs) or ())
        if not self.inputs or not self.outputs:
            raise ValueError(f"model {self.name!r} must declare its inputs and outputs")

    def preset(self, name: str) -> Preset:
        """The preset called `name`; an unknown one is a `ZooError` naming the known ones."""
        try:
            return self.presets[name]
        except KeyError:
            raise unknown("preset", name, self.presets, hint=f"presets of {self.name}") from None

    def io(self, preset: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """The input and output specs of the model built with `preset`."""
        p = self.preset(preset)
        return p.inputs or self.inputs, p.outputs or self.outputs

    def graph_specs(self, preset: str) -> tuple[GraphSpec, ...]:
        """The graphs exported for a model built with `preset`: the preset's, else the spec's, else one forward
        graph ``model`` with the preset's inputs and outputs."""
        p = self.preset(preset)
        if p.graphs:
            return p.graphs
        if self.graphs:
            return self.graphs
        return (GraphSpec("model", *self.io(preset)),)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "chapter": self.chapter, "section": self.section, "summary": self.summary,
            "task": self.task, "dataset": self.dataset, "builder": self.builder, "plugin": self.plugin,
            "tags": list(self.tags),
            "presets": {
                name: {**p.to_json(), "inputs": [t.to_json() for t in self.io(name)[0]],
                       "outputs": [t.to_json() for t in self.io(name)[1]],
                       "graphs": [g.to_json() for g in self.graph_specs(name)]}
                for name, p in self.presets.items()
            },
            "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs],
            "parity": {"atol": self.parity.atol, "rtol": self.parity.rtol, "reason": self.parity.reason},
            "onnx_exporter": self.onnx_exporter,
        }


@dataclass(frozen=True)
class DataSpec:
    """A dataset: its name, its `zoo_core.DataModule` class as a ``"module:Class"`` string, and where it comes from."""

    name: str
    builder: str
    summary: str
    source: str = ""
    plugin: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"dataset name {self.name!r} must be lower-case letters, digits and hyphens")
        if ":" not in self.builder:
            raise ValueError(f"dataset {self.name!r}: builder {self.builder!r} must be 'package.module:Class'")


class Registry:
    """Models and datasets by name, each remembering the plugin that registered it."""

    def __init__(self) -> None:
        self.models: dict[str, ModelSpec] = {}
        self.datasets: dict[str, DataSpec] = {}

    def add_model(self, spec: ModelSpec, plugin: str) -> None:
        self._add(self.models, "model", replace(spec, plugin=plugin))

    def add_dataset(self, spec: DataSpec, plugin: str) -> None:
        self._add(self.datasets, "dataset", replace(spec, plugin=plugin))

    @staticmethod
    def _add(table: dict, kind: str, spec: ModelSpec | DataSpec) -> None:
        if spec.name in table:
            raise DuplicateNameError(kind, spec.name, table[spec.name].plugin, spec.plugin)
        table[spec.name] = spec


class DuplicateNameError(ZooError):
    """A model or dataset name registered a second time; the first registration stays (the plugin loader refuses
    the plugin that came second, see `zoo_core.plugins`)."""

    def __init__(self, kind: str, name: str, owner: str, newcomer: str) -> None:
        super().__init__(f"{kind} {name!r} is registered twice, by plugin {owner!r} and by plugin {newcomer!r}; "
                         f"uninstall one, or choose plugins with ZOO_PLUGINS")
        self.kind, self.name, self.owner, self.newcomer = kind, name, owner, newcomer


# --- lookups: the public API, which the CLI uses too ---------------------------------------------------------------

def _registry() -> Registry:
    from zoo_core import plugins  # late: plugins imports this module

    return plugins.load().registry


def list_models(pattern: str | None = None, chapter: int | None = None, plugin: str | None = None) -> list[ModelSpec]:
    """Registered models, sorted by chapter then name; `pattern` is a shell glob (``'res*'``) on the name, in any
    case (``'LeNet*'`` finds ``lenet``)."""
    specs = [s for s in _registry().models.values()
             if (pattern is None or fnmatch.fnmatchcase(s.name.lower(), pattern.lower()))
             and (chapter is None or s.chapter == chapter)
             and (plugin is None or s.plugin == plugin)]
    return sorted(specs, key=lambda s: (s.chapter, _section_key(s.section), s.name))


def _section_key(section: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in section.split("."))


def list_datasets() -> list[DataSpec]:
    """Registered datasets, sorted by name."""
    return sorted(_registry().datasets.values(), key=lambda s: s.name)


def get_spec(name: str) -> ModelSpec:
    """The spec of model `name`; an unknown name is a `ZooError` suggesting the closest names."""
    from zoo_core import plugins

    state = plugins.load()
    try:
        return state.registry.models[name]
    except KeyError:
        raise unknown("model", name, state.registry.models, hint=state.unknown_name_hint()) from None


def get_data_spec(name: str) -> DataSpec:
    """The spec of dataset `name`; an unknown name is a `ZooError` suggesting the closest names."""
    try:
        return _registry().datasets[name]
    except KeyError:
        raise unknown("dataset", name, _registry().datasets) from None


def import_builder(builder: str) -> Any:
    """Import ``"package.module:Attr"``; failures are a `ZooError` naming the builder."""
    module_name, _, attr = builder.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ZooError(f"cannot import builder {builder!r}: {type(e).__name__}: {e}") from e
    return obj


def model_class(spec: ModelSpec) -> type[Model]:
    """The `Model` subclass a spec builds."""
    return import_builder(spec.builder)


def data_class(spec: DataSpec) -> type[DataModule]:
    """The `DataModule` subclass a dataset spec builds."""
    return import_builder(spec.builder)


def get_model(name: str, preset: str = "book", **hparams: Any) -> Model:
    """Build model `name` with `preset`'s hyper-parameters, overridden by `hparams`, materialised and initialised.

    The model is ready for a forward pass, `num_params()`, saving and export (lazy layers have run once on the
    model's example inputs, then `init_weights()` ran).
    """
    spec = get_spec(name)
    return build_model(spec, {**spec.preset(preset).model, **hparams})


def build_model(spec: ModelSpec, hparams: Mapping[str, Any]) -> Model:
    """Build `spec`'s model from a complete set of hyper-parameters (a preset's, or a manifest's)."""
    from zoo_core.hparams import check_arguments

    cls = model_class(spec)
    check_arguments(cls, hparams, f"model {spec.name}")
    try:
        model = cls(**hparams)
    except (ValueError, TypeError, RuntimeError) as e:  # a value the model refuses (`--set num_hiddens=0`): one line
        raise ZooError(f"model {spec.name} refuses its hyper-parameters: {' '.join(str(e).split())}") from e
    return model.materialize()


def get_data(name: str, preset: str = "book", data_dir: str | None = None, **hparams: Any) -> DataModule:
    """Build the `DataModule` of model `name` with `preset`'s data hyper-parameters, overridden by `hparams`.

    `data_dir` is where to look first for the dataset's files (then ``$ZOO_DATA``, then ``~/.cache/zoo/data``).
    """
    spec = get_spec(name)
    return build_data(spec, {**spec.preset(preset).data, **hparams}, data_dir=data_dir)


def build_data(spec: ModelSpec, hparams: Mapping[str, Any], data_dir: str | None = None) -> DataModule:
    """Build `spec`'s `DataModule` from a complete set of data hyper-parameters."""
    from zoo_core.hparams import check_arguments

    cls = data_class(get_data_spec(spec.dataset))
    check_arguments(cls, hparams, f"dataset {spec.dataset} (model {spec.name})")
    kwargs = dict(hparams)
    if data_dir is not None and "data_dir" in inspect.signature(cls).parameters:
        kwargs["data_dir"] = data_dir
    return cls(**kwargs)


__all__ = [
    "DataSpec", "DuplicateNameError", "GraphSpec", "ModelSpec", "Preset", "Registry", "TensorSpec", "Tolerance",
    "UnknownNameError",
    "build_data", "build_model", "get_data", "get_data_spec", "get_model", "get_spec", "import_builder",
    "list_datasets", "list_models",
]
