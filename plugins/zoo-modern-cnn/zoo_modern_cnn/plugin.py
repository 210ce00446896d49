"""Registers chapter 8's models. Imports no torch: builders are named as strings.

Every model has the book's recipe (`book`: Fashion-MNIST resized as the book does, batch 128, 10 epochs, the book's
learning rate) and a `tiny` one (the same class with narrow layers, and shallower where the architecture has a
depth argument, on small synthetic images, for the contract tests; the LeNets keep their book widths, already tiny).
``num_params`` of each `book` preset is the book's own network's count (d2l 1.0.3; see tests/test_fidelity.py).
"""

from __future__ import annotations

from typing import Any

from zoo_core import ModelSpec, Preset, hookimpl

TINY_DATA = {"synthetic": True, "num_train": 64, "num_val": 32, "batch_size": 16}


def _image(size: int) -> list[str]:
    return [f"X: float32[batch, 1, {size}, {size}]"]


def _presets(lr: float, size: int, book_params: int, tiny: dict[str, Any], tiny_size: int, tiny_params: int,
             book: dict[str, Any] | None = None) -> dict[str, Preset]:
    resize = {} if size == 28 else {"resize": size}  # Fashion-MNIST is 28x28: LeNets take it as it is
    tiny_resize = {} if tiny_size == 28 else {"resize": tiny_size}
    return {
        "book": Preset(model={"lr": lr, "image_size": size, **(book or {})}, data={"batch_size": 128, **resize},
                       train={"max_epochs": 10}, num_params=book_params, inputs=_image(size),
                       summary=f"Fashion-MNIST at {size} px, batch 128, lr {lr}, 10 epochs (the book's)"),
        "tiny": Preset(model={"lr": lr, "image_size": tiny_size, **tiny}, data={**TINY_DATA, **tiny_resize},
                       train={"max_epochs": 1}, num_params=tiny_params, inputs=_image(tiny_size),
                       summary=f"narrow layers on a synthetic stand-in of Fashion-MNIST at {tiny_size} px"),
    }


@hookimpl
def zoo_register_models(register):
    common = {"chapter": 8, "task": "classification", "dataset": "fashion-mnist",
              "outputs": ["logits: float32[batch, 10]"]}
    m = "zoo_modern_cnn."
    register(ModelSpec(
        name="alexnet", builder=m + "alexnet:AlexNet", section="8.1",
        summary="AlexNet: 5 convolutions (11x11/4 first), 3 max-pools, two 4096-unit dense layers with dropout",
        presets=_presets(0.01, 224, 46_764_746, {"channels": [8, 16, 16, 16, 16], "num_hiddens": 32}, 72, 13_082,
                         book={"channels": [96, 256, 384, 384, 256], "num_hiddens": 4096}),
        tags=("concise",), inputs=_image(224), **common))
    register(ModelSpec(
        name="vgg", builder=m + "vgg:VGG", section="8.2",
        summary="VGG-11 with a quarter of the channels: 5 blocks of 3x3 convolutions and 2x2 max-pools",
        presets=_presets(0.01, 224, 43_093_322,
                         {"arch": [[1, 4], [1, 8], [2, 8], [2, 8], [2, 8]], "num_hiddens": 32}, 32, 5_514,
                         book={"arch": [[1, 16], [1, 32], [2, 64], [2, 128], [2, 128]]}),
        tags=("concise",), inputs=_image(224), **common))
    register(ModelSpec(
        name="nin", builder=m + "nin:NiN", section="8.3",
        summary="Network in Network: conv + two 1x1 convs per block, global average pooling instead of dense layers",
        presets=_presets(0.05, 224, 1_992_166, {"channels": [8, 16, 16]}, 72, 9_414,
                         book={"channels": [96, 256, 384]}),
        tags=("concise",), inputs=_image(224), **common))
    register(ModelSpec(
        name="googlenet", builder=m + "googlenet:GoogleNet", section="8.4",
        summary="GoogLeNet: stem and 9 Inception blocks (4 parallel branches concatenated), global average pooling",
        presets=_presets(0.01, 96, 5_977_530, {"width": 0.0625}, 32, 24_703, book={"width": 1.0}),
        tags=("concise",), inputs=_image(96), **common))
    register(ModelSpec(
        name="bn-lenet-scratch", builder=m + "batchnorm:BNLeNetScratch", section="8.5",
        summary="LeNet with batch normalization from scratch (moving statistics as buffers)",
        presets=_presets(0.1, 28, 44_878, {}, 28, 44_878), tags=("scratch",), inputs=_image(28), **common))
    register(ModelSpec(
        name="bn-lenet", builder=m + "batchnorm:BNLeNet", section="8.5",
        summary="LeNet with nn.LazyBatchNorm2d / nn.LazyBatchNorm1d after each convolution and dense layer",
        presets=_presets(0.1, 28, 44_878, {}, 28, 44_878), tags=("concise",), inputs=_image(28), **common))
    register(ModelSpec(
        name="resnet18", builder=m + "resnet:ResNet18", section="8.6",
        summary="ResNet-18: 7x7 stem, 4 stages of 2 residual blocks (64-512 channels), global average pooling",
        presets=_presets(0.01, 96, 11_178_378, {"channels": [8, 8, 16, 16]}, 32, 23_538,
                         book={"channels": [64, 128, 256, 512]}),
        tags=("concise",), inputs=_image(96), **common))
    register(ModelSpec(
        name="regnetx32", builder=m + "anynet:RegNetX32", section="8.8",
        summary="RegNetX-32: AnyNet with stem 32 and stages of ResNeXt blocks (depth 4 x 32 ch, 6 x 80 ch), groups 16",
        presets=_presets(0.05, 96, 179_290,
                         {"stem_channels": 8, "depths": [1, 2], "channels": [8, 16], "groups": 4}, 32, 3_354,
                         book={"stem_channels": 32, "depths": [4, 6], "channels": [32, 80], "groups": 16,
                               "bot_mul": 1.0}),
        tags=("concise",), inputs=_image(96), **common))
    register(ModelSpec(
        name="densenet", builder=m + "densenet:DenseNet", section="8.7",
        summary="DenseNet: 4 dense blocks of 4 convs (growth 32) with channel-halving transitions",
        presets=_presets(0.01, 96, 758_226, {"num_channels": 8, "growth_rate": 4, "arch": [2, 2]}, 32, 2_322,
                         book={"num_channels": 64, "growth_rate": 32, "arch": [4, 4, 4, 4]}),
        tags=("concise",), inputs=_image(96), **common))
