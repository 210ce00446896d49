"""Hyper-parameters (`zoo_core.hparams`): capture, ``--set KEY=VALUE`` parsing, type coercion, routing, checks.

No `from __future__ import annotations` here on purpose: the toy classes below carry real annotation objects
(``int | None``), so coercion by annotation is tested directly; the zoo's own classes (string annotations) are
exercised through `FashionMNIST`.
"""

import json
from typing import Optional

import pytest

from zoo_core import UnknownNameError, ZooError
from zoo_core.hparams import (
    HyperParameters, accepted_arguments, check_arguments, coerce, parse_assignments, resolve_overrides,
)


# --- save_hyperparameters ---------------------------------------------------------------------------------------------

class Recorder(HyperParameters):
    def __init__(self, lr: float = 0.1, num_hiddens: int = 256, sizes=(1, 2), name: str = "net") -> None:
        local = "not a hyper-parameter"  # noqa: F841 - locals that are not arguments are not recorded
        self.save_hyperparameters()


class WithIgnore(HyperParameters):
    def __init__(self, lr: float = 0.1, device=None, callback=None) -> None:
        self.save_hyperparameters(ignore=["device", "callback"])


class WithKwargs(HyperParameters):
    def __init__(self, lr: float = 0.1, **kwargs) -> None:
        self.save_hyperparameters(ignore=["device"])


class Base(HyperParameters):
    def __init__(self, lr: float = 0.1, sigma: float = 0.01) -> None:
        self.save_hyperparameters()


class Child(Base):
    def __init__(self, lambd: float = 3.0, lr: float = 0.01) -> None:
        super().__init__(lr=lr)
        self.save_hyperparameters()


def test_save_hyperparameters_records_arguments_and_sets_attributes():
    obj = Recorder(0.5, sizes=[3, 4])
    assert obj.hparams == {"lr": 0.5, "num_hiddens": 256, "sizes": [3, 4], "name": "net"}
    assert (obj.lr, obj.num_hiddens, obj.sizes, obj.name) == (0.5, 256, [3, 4], "net")
    assert not hasattr(obj, "local")
    assert json.loads(json.dumps(obj.hparams)) == obj.hparams


def test_save_hyperparameters_ignore():
    obj = WithIgnore(0.2, device=object(), callback=print)  # ignored values need not be JSON
    assert obj.hparams == {"lr": 0.2}
    assert not hasattr(obj, "device") and not hasattr(obj, "callback")


def test_save_hyperparameters_records_var_keywords():
    obj = WithKwargs(lr=0.3, depth=4)
    assert obj.hparams == {"lr": 0.3, "depth": 4}
    assert obj.depth == 4


def test_save_hyperparameters_ignore_applies_to_var_keywords():
    obj = WithKwargs(lr=0.3, device="cpu")
    assert obj.hparams == {"lr": 0.3}
    assert not hasattr(obj, "device")


def test_save_hyperparameters_ignored_var_keyword_need_not_be_json():
    assert WithKwargs(lr=0.3, device=object()).hparams == {"lr": 0.3}


def test_save_hyperparameters_subclass_records_its_own_arguments():
    obj = Child(lambd=2.0)
    assert obj.hparams == {"lambd": 2.0, "lr": 0.01}
    assert obj.sigma == 0.01  # set by the base class's call


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", 1j])
def test_save_hyperparameters_rejects_non_json_values(value):
    with pytest.raises(TypeError) as info:
        Recorder(num_hiddens=value)
    message = str(info.value)
    assert "Recorder" in message and "num_hiddens=" in message and "not a JSON value" in message
    assert "ignore=" in message  # says how to fix it


def test_save_hyperparameters_on_a_model():
    import torch

    from zoo_core import Model

    class Tiny(Model):
        def __init__(self, num_inputs: int = 3, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Linear(num_inputs, 1)

    model = Tiny(num_inputs=5)
    assert model.hparams == {"num_inputs": 5, "lr": 0.1}
    assert model.net.in_features == 5 and model.lr == 0.1
    assert isinstance(model.configure_optimizers(), torch.optim.SGD)


# --- parse_assignments --------------------------------------------------------------------------------------------

def test_parse_assignments():
    assert parse_assignments([]) == {}
    assert parse_assignments(["lr=0.1", "w=[2, -3.4]", " batch-size = 64 ", "expr=a=b", "name="]) == {
        "lr": "0.1", "w": "[2, -3.4]", "batch_size": "64", "expr": "a=b", "name": ""}
    assert parse_assignments(["lr=0.1", "lr=0.2"]) == {"lr": "0.2"}  # the last one wins


@pytest.mark.parametrize("item", ["lr", "lr:0.1", ""])
def test_parse_assignments_missing_equals(item):
    with pytest.raises(ZooError, match=r"expected KEY=VALUE, e\.g\. --set lr=0\.05"):
        parse_assignments([item])


@pytest.mark.parametrize("item", ["=0.1", "1lr=3", "l r=3", "lr.x=3", "lr!=3"])
def test_parse_assignments_bad_key(item):
    with pytest.raises(ZooError, match=f"--set {item!r}"):
        parse_assignments([item])


# --- coerce ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, current, annotation, expected", [
    # by the current value's type
    ("true", False, None, True),
    ("Off", True, None, False),
    ("YES", False, None, True),
    ("0", True, None, False),
    ("3", 1, None, 3),
    ("-7", 1, None, -7),
    ("0.5", 1.0, None, 0.5),
    ("2", 1.0, None, 2.0),
    ("1e-3", 0.1, None, 0.001),
    ("7", "s", None, "7"),
    ("[1, 2]", [0], None, [1, 2]),
    ("[1, 2]", (0,), None, (1, 2)),
    ('{"k": 1}', {}, None, {"k": 1}),
    # no type to go by: a JSON value when it parses, else the text
    ("null", None, None, None),
    ("3", None, None, 3),
    ("[2, -3.4]", None, None, [2, -3.4]),
    ("relu", None, None, "relu"),
    # by the annotation, which wins over the current value
    ("7", None, int | None, 7),
    ("7", None, Optional[int], 7),
    ("0.25", None, float | None, 0.25),
    ("3", 1, float, 3.0),
    ("1", None, bool, True),
    ("8", None, "int", 8),            # string annotations (from __future__ import annotations), simple ones
    ("8", None, "float", 8.0),
    ("abc", None, "str", "abc"),
    ("[3, 4]", None, list[int], [3, 4]),
    ("[3, 4]", None, tuple[int, ...], (3, 4)),
])
def test_coerce(text, current, annotation, expected):
    value = coerce("key", text, current, annotation)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("key, text, current, annotation, message", [
    ("lr", "abc", 0.1, None, "--set lr=abc: expected a number"),
    ("epochs", "2.5", 3, None, "--set epochs=2.5: expected an integer"),
    ("epochs", "x", None, int | None, "--set epochs=x: expected an integer"),
    ("shuffle", "maybe", True, None, "--set shuffle=maybe: expected true or false"),
    ("sizes", "3", [1], None, "--set sizes=3: expected a JSON list like [1, 2]"),
    ("sizes", "[1, 2", (1,), None, "--set sizes=[1, 2: expected a JSON list like [1, 2]"),
    ("opts", "[1]", {}, None, "--set opts=[1]: expected a JSON object"),
    ("lr", "fast", None, "float", "--set lr=fast: expected a number"),
])
def test_coerce_wrong_type_is_one_line_zoo_error(key, text, current, annotation, message):
    with pytest.raises(ZooError) as info:
        coerce(key, text, current, annotation)
    assert str(info.value) == message
    assert info.value.__suppress_context__  # no chained ValueError in a --debug traceback


def test_coerce_optional_accepts_null():
    assert coerce("num_train", "null", 100, int | None) is None


# --- resolve_overrides / check_arguments ---------------------------------------------------------------------------

class Net:
    def __init__(self, lr: float = 0.1, num_inputs: int = 2, hidden: int | None = None) -> None:
        pass


class Data:
    def __init__(self, batch_size: int = 32, num_inputs: int = 2, data_dir: str | None = None) -> None:
        pass


class Anything:
    def __init__(self, lr: float = 0.1, **kwargs) -> None:
        pass


class Needs:
    def __init__(self, vocab_size: int, num_hiddens: int, lr: float = 0.1) -> None:
        pass


TARGETS = {"model": (Net, {"lr": 0.03}), "data": (Data, {"batch_size": 16})}


def test_resolve_overrides_routes_to_model_data_or_both():
    routed = resolve_overrides({"lr": "0.5", "batch_size": "64", "num_inputs": "8", "hidden": "16"}, TARGETS, "toy")
    assert routed == {"model": {"lr": 0.5, "num_inputs": 8, "hidden": 16}, "data": {"batch_size": 64, "num_inputs": 8}}
    assert type(routed["model"]["lr"]) is float and type(routed["data"]["batch_size"]) is int
    assert resolve_overrides({}, TARGETS, "toy") == {"model": {}, "data": {}}


def test_resolve_overrides_converts_by_annotation_and_checks_type():
    assert resolve_overrides({"lr": "1"}, TARGETS, "toy")["model"]["lr"] == 1.0
    with pytest.raises(ZooError, match=r"--set batch_size=big: expected an integer"):
        resolve_overrides({"batch_size": "big"}, TARGETS, "toy")


def test_resolve_overrides_var_keyword_target_takes_anything():
    routed = resolve_overrides({"depth": "4", "lr": "0.2"}, {"model": (Anything, {})}, "toy")
    assert routed == {"model": {"depth": 4, "lr": 0.2}}


def test_resolve_overrides_unknown_key_lists_accepted_names():
    with pytest.raises(UnknownNameError) as info:
        resolve_overrides({"lrr": "0.5"}, TARGETS, "model toy")
    message = str(info.value)
    assert "unknown hyper-parameter 'lrr'" in message and "did you mean 'lr'" in message
    assert "model toy takes: batch_size, hidden, lr, num_inputs" in message
    assert "data_dir" not in message  # not a hyper-parameter


def test_resolve_overrides_checks_types_of_zoo_classes_with_string_annotations():
    from zoo_core.data.fashion_mnist import FashionMNIST

    with pytest.raises(ZooError, match="--set num_train=abc: expected an integer"):
        resolve_overrides({"num_train": "abc"}, {"data": (FashionMNIST, {})}, "softmax")
    with pytest.raises(ZooError, match="expected an integer"):
        resolve_overrides({"num_train": "1e3"}, {"data": (FashionMNIST, {})}, "softmax")  # not 1000.0


def test_accepted_arguments():
    assert list(accepted_arguments(Net)) == ["lr", "num_inputs", "hidden"]
    assert accepted_arguments(Anything) is None


def test_check_arguments():
    check_arguments(Needs, {"vocab_size": 28, "num_hiddens": 32}, "model rnn")
    check_arguments(Anything, {"whatever": 1}, "model any")  # **kwargs: anything goes
    with pytest.raises(ZooError, match=r"^model rnn needs hyper-parameter\(s\) vocab_size, num_hiddens$"):
        check_arguments(Needs, {"lr": 0.5}, "model rnn")
    with pytest.raises(ZooError, match=r"model rnn needs hyper-parameter\(s\) num_hiddens$"):
        check_arguments(Needs, {"vocab_size": 28}, "model rnn")
    with pytest.raises(UnknownNameError, match=r"unknown hyper-parameter 'vocab'.*did you mean 'vocab_size'"):
        check_arguments(Needs, {"vocab": 28, "num_hiddens": 32}, "model rnn")
