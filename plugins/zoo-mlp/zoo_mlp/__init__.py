"""d2l-zoo, chapter 5: multilayer perceptrons (from scratch and concise), dropout, and Kaggle house prices.

Names are imported on first use (PEP 562): the plugin module is imported by ``zoo list``, which must not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo_core.lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(["MLP", "DropoutMLP", "DropoutMLPScratch", "MLPScratch", "dropout_layer", "relu"], "zoo_mlp.mlp"),
    **dict.fromkeys(["HousePrices", "KaggleHouse"], "zoo_mlp.house"),
}

if TYPE_CHECKING:
    from zoo_mlp.house import HousePrices, KaggleHouse  # noqa: F401
    from zoo_mlp.mlp import MLP, DropoutMLP, DropoutMLPScratch, MLPScratch, dropout_layer, relu  # noqa: F401


__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
