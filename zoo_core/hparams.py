"""Hyper-parameters: captured from constructor arguments, validated by name, overridden from ``KEY=VALUE`` strings.

Models and data modules record the arguments they were built with (the book's ``save_hyperparameters``); those
records go into checkpoints and manifests, so they must be JSON values. Overrides (``zoo train --set lr=0.05``) are
checked against the constructor's signature and converted to the type of the value they replace.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from zoo_core.errors import ZooError, unknown


class HyperParameters:
    """Mixin that records constructor arguments in ``self.hparams`` and as attributes (d2l's ``HyperParameters``)."""

    hparams: dict[str, Any]

    def save_hyperparameters(self, ignore: Iterable[str] = ()) -> None:
        """Record the calling ``__init__``'s arguments (but `ignore`d ones) in ``self.hparams`` and as attributes."""
        frame = inspect.currentframe()
        assert frame is not None and frame.f_back is not None
        info = inspect.getargvalues(frame.f_back)
        skip = set(ignore) | {"self"}
        values = {name: info.locals[name] for name in info.args if name not in skip}
        if info.keywords:
            values.update({k: v for k, v in info.locals[info.keywords].items() if k not in skip})
        for name, value in values.items():
            try:
                json.dumps(value)
            except TypeError:
                raise TypeError(f"{type(self).__name__}: hyper-parameter {name}={value!r} is not a JSON value; "
                                f"pass plain numbers, strings, lists or dicts (or add it to ignore=)") from None
            setattr(self, name, value)
        self.hparams = values


def accepted_arguments(cls: type) -> dict[str, inspect.Parameter] | None:
    """The keyword arguments ``cls(...)`` accepts, or None when it takes ``**kwargs`` (anything)."""
    try:  # zoo modules use `from __future__ import annotations`: resolve the strings to types
        params = inspect.signature(cls, eval_str=True).parameters
    except (NameError, TypeError, SyntaxError):
        params = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_arguments(cls: type, values: Mapping[str, Any], owner: str) -> None:
    """Raise a `ZooError` if `values` has a key ``cls`` does not take, or misses a required one."""
    accepted = accepted_arguments(cls)
    if accepted is None:
        return
    for key in values:
        if key not in accepted:
            raise unknown("hyper-parameter", key, accepted, hint=f"{owner} takes: {', '.join(accepted)}",
                          list_known=False)
    missing = [n for n, p in accepted.items() if p.default is p.empty and n not in values]
    if missing:
        raise ZooError(f"{owner} needs hyper-parameter(s) {', '.join(missing)}")


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``["lr=0.1", "w=[2, -3.4]"]`` -> ``{"lr": "0.1", "w": "[2, -3.4]"}``; a malformed item is a `ZooError`."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ZooError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=0.05")
        out[key] = value.strip()
    return out


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _target_type(current: Any, annotation: Any) -> Any:
    """The type a new value must have: the annotation's when it is simple, else the current value's."""
    if isinstance(annotation, str):  # `from __future__ import annotations`
        annotation = {"int": int, "float": float, "bool": bool, "str": str}.get(annotation, None)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    if annotation in (int, float, bool, str, list, tuple, dict):
        return annotation
    if typing.get_origin(annotation) in (list, tuple, dict):
        return typing.get_origin(annotation)
    return None if current is None else type(current)


def _optional(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation)


def coerce(key: str, text: str, current: Any = None, annotation: Any = None) -> Any:
    """Convert ``--set key=text`` to the type of the value it replaces (`current`) or of its annotation."""
    if text.strip().lower() in ("null", "none") and (current is None or _optional(annotation)):
        return None
    target = _target_type(current, annotation)
    try:
        if target is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError
        if target is int:
            return int(text)
        if target is float:
            return float(text)
        if target is str:
            return text
        if target in (list, tuple, dict):
            value = json.loads(text)
            if not isinstance(value, dict if target is dict else list):
                raise ValueError
            return tuple(value) if target is tuple else value
        try:  # no type to go by: a JSON value if it parses as one (numbers, lists, null), else the string
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    except (ValueError, json.JSONDecodeError):
        expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                    list: "a JSON list like [1, 2]", tuple: "a JSON list like [1, 2]", dict: "a JSON object"}
        raise ZooError(f"--set {key}={text}: expected {expected[target]}") from None


def resolve_overrides(assignments: Mapping[str, str], targets: Mapping[str, tuple[type, Mapping[str, Any]]],
                      owner: str) -> dict[str, dict[str, Any]]:
    """Route ``KEY=VALUE`` strings to the constructors that take KEY, converted to the right type.

    `targets` maps a target name (``"model"``, ``"data"``) to its class and its current values (the preset's). A key
    that several targets take goes to all of them (``num_steps`` of a language model and of its data); a key none
    takes is a `ZooError` naming what is accepted.
    """
    routed: dict[str, dict[str, Any]] = {name: {} for name in targets}
    accepted_by = {name: accepted_arguments(cls) for name, (cls, _) in targets.items()}
    for key, text in assignments.items():
        hit = False
        for name, (_, current) in targets.items():
            accepted = accepted_by[name]
            if accepted is None or key in accepted:
                param = accepted.get(key) if accepted else None
                default = param.default if param is not None and param.default is not param.empty else None
                annotation = param.annotation if param is not None and param.annotation is not param.empty else None
                routed[name][key] = coerce(key, text, current.get(key, default), annotation)
                hit = True
        if not hit:
            names = sorted({k for a in accepted_by.values() if a for k in a} - {"data_dir"})
            raise unknown("hyper-parameter", key, names, hint=f"{owner} takes: {', '.join(names)}",
                          list_known=False)
    return routed
