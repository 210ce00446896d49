"""The registry (`zoo_core.registry`) and the errors it raises (`zoo_core.errors`).

Specs are built and validated without torch; the lookups run against the installed first-party plugins
(zoo-linear: chapter 3, zoo-softmax: chapter 4).
"""

from __future__ import annotations

import pytest

import zoo_core
from zoo_core import (
    ModelSpec, Preset, TensorSpec, Tolerance, UnknownNameError, ZooError, get_data, get_data_spec, get_model,
    get_spec, list_models,
)
from zoo_core import plugins
from zoo_core.errors import unknown
from zoo_core.registry import DataSpec, DuplicateNameError, Registry, import_builder

CH3 = {"linreg-scratch", "linreg", "weight-decay-scratch", "weight-decay"}
CH4 = {"softmax-scratch", "softmax"}


@pytest.fixture(scope="module", autouse=True)
def installed_plugins():
    """Every installed plugin (no ZOO_PLUGINS allowlist), loaded afresh for this module and forgotten after it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ZOO_PLUGINS", raising=False)
        plugins.reset()
        yield
        plugins.reset()


def make_spec(**changes) -> ModelSpec:
    fields = dict(
        name="toy", builder="toy_pkg.toy:Toy", chapter=3, section="3.1", summary="a toy", task="regression",
        dataset="synthetic-regression", presets={"book": Preset(), "tiny": Preset()},
        inputs=["X: float32[batch, 2]"], outputs=["y_hat: float32[batch, 1]"],
    )
    fields.update(changes)
    return ModelSpec(**fields)


# --- TensorSpec ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "X: float32[batch, 1, 28, 28]",
    "tokens: int64[batch, seq]",
    "valid_len: int32[batch]",
    "mask: bool[batch, seq, seq]",
    "scalar: float64[]",
])
def test_tensor_spec_str_parse_round_trip(text):
    spec = TensorSpec.parse(text)
    assert str(spec) == text
    assert TensorSpec.parse(str(spec)) == spec


def test_tensor_spec_parse_fields_and_whitespace():
    spec = TensorSpec.parse("  X :float32[ batch ,1,  28,28 ] ")
    assert (spec.name, spec.dtype, spec.shape) == ("X", "float32", ("batch", 1, 28, 28))
    assert isinstance(spec.shape[1], int) and isinstance(spec.shape[0], str)
    assert str(spec) == "X: float32[batch, 1, 28, 28]"
    assert TensorSpec.parse(spec) is spec  # a TensorSpec passes through
    assert spec.to_json() == {"name": "X", "dtype": "float32", "shape": ["batch", 1, 28, 28]}


@pytest.mark.parametrize("text", [
    "",
    "X float32[batch, 2]",       # no colon
    "X: float32(batch, 2)",      # wrong brackets
    "X: float32[batch, 2",       # unclosed
    "1X: float32[batch]",        # name is not an identifier
    "X: float33[batch]",         # unknown dtype
    "X: complex64[batch]",       # unsupported dtype
    "X: [batch]",                # no dtype
])
def test_tensor_spec_parse_rejects_bad_specs(text):
    with pytest.raises(ValueError, match="tensor spec"):
        TensorSpec.parse(text)


def test_tensor_spec_unknown_dtype_message_lists_dtypes():
    with pytest.raises(ValueError, match=r"unknown dtype 'float33'.*float32"):
        TensorSpec.parse("X: float33[batch]")


@pytest.mark.parametrize("text", ["X: float32[batch, -1]", "X: float32[batch, 2.5]", "X: float32[batch,, 2]"])
def test_tensor_spec_parse_rejects_malformed_dims(text):
    with pytest.raises(ValueError):
        TensorSpec.parse(text)


def test_concrete_shape():
    spec = TensorSpec.parse("X: float32[batch, 3, seq, seq]")
    assert spec.concrete_shape({"batch": 4, "seq": 7}) == (4, 3, 7, 7)
    assert TensorSpec.parse("X: float32[2, 3]").concrete_shape({}) == (2, 3)
    assert TensorSpec.parse("X: float32[batch]").concrete_shape({"batch": 1, "unused": 9}) == (1,)


# --- ModelSpec -------------------------------------------------------------------------------------------------------

def test_model_spec_parses_io_strings_and_tags():
    spec = make_spec(tags=["scratch", "concise"])
    assert spec.inputs == (TensorSpec("X", "float32", ("batch", 2)),)
    assert spec.outputs == (TensorSpec("y_hat", "float32", ("batch", 1)),)
    assert spec.tags == ("scratch", "concise")
    assert spec.onnx_exporter == "dynamo" and spec.parity == Tolerance()


@pytest.mark.parametrize("name", ["Softmax", "soft_max", "-lenet", "", "res net", "lenet!"])
def test_model_spec_rejects_bad_names(name):
    with pytest.raises(ValueError, match="lower-case"):
        make_spec(name=name)


@pytest.mark.parametrize("name", ["lenet", "resnet18", "softmax-scratch", "3d-cnn"])
def test_model_spec_accepts_good_names(name):
    assert make_spec(name=name).name == name


def test_model_spec_builder_needs_colon():
    with pytest.raises(ValueError, match=r"builder 'toy_pkg\.toy\.Toy' must be 'package\.module:Class'"):
        make_spec(builder="toy_pkg.toy.Toy")


@pytest.mark.parametrize("presets, missing", [
    ({"tiny": Preset()}, "book"),
    ({"book": Preset()}, "tiny"),
    ({"fast": Preset()}, "book or tiny"),
])
def test_model_spec_needs_book_and_tiny_presets(presets, missing):
    with pytest.raises(ValueError, match=f"has no {missing} preset"):
        make_spec(presets=presets)


def test_model_spec_non_default_tolerance_needs_reason():
    with pytest.raises(ValueError, match="needs a reason"):
        make_spec(parity=Tolerance(atol=1e-3))
    with pytest.raises(ValueError, match="needs a reason"):
        make_spec(parity=Tolerance(rtol=1e-2))
    spec = make_spec(parity=Tolerance(atol=1e-3, reason="fp32 accumulation order in a long reduction"))
    assert spec.parity.atol == 1e-3


def test_model_spec_torchscript_exporter_needs_reason():
    with pytest.raises(ValueError, match="torchscript exporter needs an onnx_reason"):
        make_spec(onnx_exporter="torchscript")
    spec = make_spec(onnx_exporter="torchscript", onnx_reason="data-dependent control flow")
    assert spec.onnx_exporter == "torchscript"
    with pytest.raises(ValueError, match="onnx_exporter must be one of"):
        make_spec(onnx_exporter="tflite", onnx_reason="x")


def test_model_spec_needs_inputs_and_outputs():
    with pytest.raises(ValueError, match="inputs and outputs"):
        make_spec(inputs=[])
    with pytest.raises(ValueError, match="inputs and outputs"):
        make_spec(outputs=())


def test_model_spec_unknown_preset_suggests_close_name():
    spec = make_spec(presets={"book": Preset(), "tiny": Preset(), "small": Preset()})
    with pytest.raises(UnknownNameError) as info:
        spec.preset("tinny")
    assert isinstance(info.value, ZooError) and isinstance(info.value, LookupError)
    message = str(info.value)
    assert "unknown preset 'tinny'" in message
    assert "did you mean 'tiny'" in message
    assert "presets of toy" in message
    assert spec.preset("small") is spec.presets["small"]


def test_model_spec_io_with_and_without_preset_override():
    presets = {"book": Preset(), "tiny": Preset(inputs=["X: float32[batch, 8]"])}
    spec = make_spec(presets=presets, inputs=["X: float32[batch, 200]"])
    book_in, book_out = spec.io("book")
    tiny_in, tiny_out = spec.io("tiny")
    assert book_in == (TensorSpec("X", "float32", ("batch", 200)),)
    assert tiny_in == (TensorSpec("X", "float32", ("batch", 8)),)
    assert book_out == tiny_out == spec.outputs  # outputs not overridden: the spec's
    with pytest.raises(UnknownNameError):
        spec.io("huge")


def test_model_spec_to_json_carries_per_preset_io():
    presets = {"book": Preset(num_params=201), "tiny": Preset(num_params=9, inputs=["X: float32[batch, 8]"])}
    card = make_spec(presets=presets).to_json()
    assert card["presets"]["tiny"]["inputs"] == [{"name": "X", "dtype": "float32", "shape": ["batch", 8]}]
    assert card["presets"]["book"]["inputs"] == card["inputs"]
    assert card["presets"]["tiny"]["num_params"] == 9


# --- Registry --------------------------------------------------------------------------------------------------------

def test_registry_records_plugin_and_rejects_duplicates():
    registry = Registry()
    registry.add_model(make_spec(), "zoo-first")
    assert registry.models["toy"].plugin == "zoo-first"
    with pytest.raises(ZooError) as info:
        registry.add_model(make_spec(summary="another toy"), "zoo-second")
    message = str(info.value)
    assert "'toy'" in message and "'zoo-first'" in message and "'zoo-second'" in message
    assert registry.models["toy"].plugin == "zoo-first"  # the first registration is kept
    assert isinstance(info.value, DuplicateNameError)  # what the plugin loader refuses a plugin with
    assert (info.value.kind, info.value.name, info.value.owner, info.value.newcomer) == (
        "model", "toy", "zoo-first", "zoo-second")


def test_registry_duplicate_dataset_names_both_plugins():
    registry = Registry()
    registry.add_dataset(DataSpec("toy-data", "toy_pkg.data:Toy", "toy data"), "zoo-a")
    with pytest.raises(ZooError, match=r"dataset 'toy-data'.*'zoo-a'.*'zoo-b'"):
        registry.add_dataset(DataSpec("toy-data", "toy_pkg.data:Other", "other"), "zoo-b")


def test_data_spec_validation():
    with pytest.raises(ValueError, match="lower-case"):
        DataSpec("Fashion_MNIST", "a.b:C", "x")
    with pytest.raises(ValueError, match="builder"):
        DataSpec("fashion", "a.b.C", "x")


# --- lookups over the installed first-party plugins ------------------------------------------------------------------

def names(specs) -> list[str]:
    return [s.name for s in specs]


def test_list_models_installed_first_party():
    specs = list_models()
    assert CH3 | CH4 <= set(names(specs))
    by_name = {s.name: s for s in specs}
    for name in CH3:
        assert (by_name[name].chapter, by_name[name].plugin) == (3, "zoo-linear")
    for name in CH4:
        assert (by_name[name].chapter, by_name[name].plugin) == (4, "zoo-softmax")
    keys = [(s.chapter, s.section) for s in specs]
    assert keys == sorted(keys)  # by chapter, then section


def test_list_models_filters():
    assert set(names(list_models(chapter=3))) == CH3
    assert set(names(list_models(chapter=4))) == CH4
    assert set(names(list_models(plugin="zoo-linear"))) == CH3
    assert set(names(list_models(plugin="zoo-softmax"))) == CH4
    assert set(names(list_models("linreg*"))) == {"linreg", "linreg-scratch"}
    assert set(names(list_models("*-scratch", chapter=3))) == {"linreg-scratch", "weight-decay-scratch"}
    assert set(names(list_models("soft*", plugin="zoo-softmax"))) == CH4
    assert names(list_models("softmax")) == ["softmax"]  # a plain name is an exact glob
    assert list_models("soft*", chapter=3) == []
    assert set(names(list_models("SOFT*"))) == CH4  # names are lower-case (checked): a glob in any case finds them
    assert list_models(plugin="no-such-plugin") == []
    assert list_models(chapter=99) == []


def test_get_spec_and_unknown_name():
    spec = get_spec("softmax")
    assert (spec.chapter, spec.dataset, spec.plugin) == (4, "fashion-mnist", "zoo-softmax")
    with pytest.raises(UnknownNameError, match=r"unknown model 'sofmax'; did you mean 'softmax'"):
        get_spec("sofmax")


def test_get_data_spec():
    assert get_data_spec("fashion-mnist").plugin == "zoo-core"
    with pytest.raises(UnknownNameError, match="did you mean 'fashion-mnist'"):
        get_data_spec("fashion-minst")


def test_unknown_suggests_by_edit_distance_then_prefix():
    error = unknown("model", "lenett", ["lenet", "resnet18", "vgg"])
    assert isinstance(error, UnknownNameError)  # returned, for the caller to raise
    assert str(error) == "unknown model 'lenett'; did you mean 'lenet'?"
    # too far for edit distance: prefixes and substrings
    assert "did you mean 'resnet18'" in str(unknown("model", "res", ["resnet18", "lenet", "vgg"]))
    assert "did you mean 'densenet'" in str(unknown("model", "dense", ["densenet", "lenet"]))
    message = str(unknown("model", "dense", ["densenet121", "densenet169", "lenet"]))
    assert "'densenet121'" in message and "'densenet169'" in message


def test_unknown_lists_known_names_when_nothing_is_close_and_adds_hint():
    assert str(unknown("model", "zzz", ["vgg", "lenet"])) == "unknown model 'zzz'; known: lenet, vgg"
    many = [f"model-{i}" for i in range(20)]
    assert str(unknown("model", "zzz", many)) == "unknown model 'zzz'"  # too many to list
    assert str(unknown("preset", "x", [], hint="presets of vgg")) == "unknown preset 'x' (presets of vgg)"


def test_unknown_prefix_matches_are_not_dropped_when_edit_distance_finds_one():
    message = str(unknown("model", "res", ["lenet", "resnet18", "resnext"]))
    assert "'resnet18'" in message and "'resnext'" in message


def test_get_model_is_materialised_and_initialised():
    import torch

    model = get_model("softmax", preset="tiny")
    assert isinstance(model, zoo_core.Model)
    assert not model.has_lazy_parameters()
    assert not any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in model.parameters())
    assert model.num_params() == get_spec("softmax").preset("tiny").num_params == 7850
    assert model(*model.example_inputs(3)).shape == (3, 10)

    linreg = get_model("linreg", preset="tiny")  # LazyLinear, then init_weights: N(0, 0.01^2), bias 0
    weight, bias = linreg.get_w_b()
    assert weight.shape == (1, 2) and torch.all(bias == 0) and weight.abs().max() < 0.1


def test_get_model_preset_and_override():
    assert get_model("softmax", preset="tiny").hparams["lr"] == 0.1
    model = get_model("softmax", preset="tiny", lr=0.5)
    assert model.hparams["lr"] == 0.5 and model.lr == 0.5
    assert get_model("weight-decay", preset="tiny").num_params() == 9
    assert get_model("weight-decay", preset="book").num_params() == 201


def test_get_model_unknown_hparam_and_preset():
    with pytest.raises(UnknownNameError) as info:
        get_model("softmax", preset="tiny", lrr=0.5)
    message = str(info.value)
    assert "unknown hyper-parameter 'lrr'" in message and "did you mean 'lr'" in message
    assert "model softmax takes: num_outputs, lr" in message
    with pytest.raises(UnknownNameError, match="unknown preset 'huge'"):
        get_model("softmax", preset="huge")
    with pytest.raises(UnknownNameError, match="unknown model"):
        get_model("softmaks")


def test_get_data_preset_override_and_unknown_hparam():
    data = get_data("softmax", preset="tiny", batch_size=8)
    assert type(data).__name__ == "FashionMNIST"
    assert data.hparams["synthetic"] is True and data.batch_size == 8
    X, y = data.example_batch()
    assert X.shape == (8, 1, 28, 28) and y.shape == (8,)
    with pytest.raises(UnknownNameError) as info:
        get_data("softmax", preset="tiny", batchsize=8)
    message = str(info.value)
    assert "unknown hyper-parameter 'batchsize'" in message and "did you mean 'batch_size'" in message
    assert "dataset fashion-mnist" in message


def test_import_builder():
    assert import_builder("zoo_core.registry:Registry") is Registry
    assert import_builder("zoo_core:errors.ZooError") is ZooError  # dotted attribute path
    with pytest.raises(ZooError, match=r"cannot import builder 'no_such_module_xyz\.mod:Cls'.*ModuleNotFoundError"):
        import_builder("no_such_module_xyz.mod:Cls")
    with pytest.raises(ZooError, match=r"cannot import builder 'zoo_core\.registry:NoSuchClass'.*AttributeError"):
        import_builder("zoo_core.registry:NoSuchClass")
