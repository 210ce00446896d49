"""Lazy re-exports for packages whose import must stay cheap (the plugin modules ``zoo list`` imports).

A package lists its public names and the submodule each lives in; they are imported on first attribute access
(PEP 562), the way scientific Python's ``lazy_loader.attach`` does it::

    # my_plugin/__init__.py
    from zoo_core.lazy import lazy_exports

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"LeNet": "my_plugin.lenet"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str],
                 eager: tuple[str, ...] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for `package`: each name in `names` is imported from its module when
    first used, then cached in the package; `eager` names (defined in the package itself) join ``__all__``."""
    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__, [*eager, *names]
