"""d2l-zoo, chapter 5: multilayer perceptrons (from scratch and concise), dropout, and Kaggle house prices.

Names are imported on first use (PEP 562): the plugin module is imported by ``zoo list``, which must not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    **dict.fromkeys(["MLP", "DropoutMLP", "DropoutMLPScratch", "MLPScratch", "dropout_layer", "relu"], "zoo_mlp.mlp"),
    **dict.fromkeys(["HousePrices", "KaggleHouse"], "zoo_mlp.house"),
}

if TYPE_CHECKING:
    from zoo_mlp.house import HousePrices, KaggleHouse  # noqa: F401
    from zoo_mlp.mlp import MLP, DropoutMLP, DropoutMLPScratch, MLPScratch, dropout_layer, relu  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo_mlp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
