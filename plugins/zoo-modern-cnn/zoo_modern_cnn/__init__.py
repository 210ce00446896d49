"""d2l-zoo, chapter 8: modern convolutional neural networks, and the blocks they are built from.

Models (registered as ``alexnet``, ``vgg``, ``nin``, ``googlenet``, ``bn-lenet-scratch``, ``bn-lenet``,
``resnet18``, ``regnetx32``, ``densenet``): `AlexNet`, `VGG`, `NiN`, `GoogleNet`, `BNLeNetScratch`, `BNLeNet`,
`ResNet` / `ResNet18`, `AnyNet` / `RegNetX32`, `DenseNet`.

Blocks, for building your own networks::

    from zoo_modern_cnn import Inception, Residual, ResNeXtBlock, DenseBlock, transition_block, vgg_block, nin_block

Names are imported on first use (PEP 562), so that the plugin's registration (``zoo_modern_cnn.plugin``, which
``zoo list`` imports) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo_core.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    # blocks
    "vgg_block": "vgg", "nin_block": "nin", "Inception": "googlenet", "BatchNorm": "batchnorm",
    "batch_norm": "batchnorm", "Residual": "resnet", "ResNeXtBlock": "resnet", "resnet_stage": "resnet",
    "anynet_stage": "anynet", "conv_block": "densenet", "DenseBlock": "densenet", "transition_block": "densenet",
    "CNNClassifier": "common",
    # models
    "AlexNet": "alexnet", "VGG": "vgg", "NiN": "nin", "GoogleNet": "googlenet", "BNLeNetScratch": "batchnorm",
    "BNLeNet": "batchnorm", "ResNet": "resnet", "ResNet18": "resnet", "AnyNet": "anynet", "RegNetX32": "anynet",
    "DenseNet": "densenet",
}

if TYPE_CHECKING:
    from zoo_modern_cnn.alexnet import AlexNet  # noqa: F401
    from zoo_modern_cnn.anynet import AnyNet, RegNetX32, anynet_stage  # noqa: F401
    from zoo_modern_cnn.batchnorm import BatchNorm, BNLeNet, BNLeNetScratch, batch_norm  # noqa: F401
    from zoo_modern_cnn.common import CNNClassifier  # noqa: F401
    from zoo_modern_cnn.densenet import DenseBlock, DenseNet, conv_block, transition_block  # noqa: F401
    from zoo_modern_cnn.googlenet import GoogleNet, Inception  # noqa: F401
    from zoo_modern_cnn.nin import NiN, nin_block  # noqa: F401
    from zoo_modern_cnn.resnet import Residual, ResNeXtBlock, ResNet, ResNet18, resnet_stage  # noqa: F401
    from zoo_modern_cnn.vgg import VGG, vgg_block  # noqa: F401


__getattr__, __dir__, __all__ = lazy_exports(
    __name__, {name: f"zoo_modern_cnn.{module}" for name, module in _LAZY.items()}, eager=("__version__",))
