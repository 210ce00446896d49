"""Registers chapter 4's models. Imports no torch: builders are named as strings."""

from zoo_core import ModelSpec, Preset, hookimpl


def _presets(model: dict) -> dict[str, Preset]:
    return {
        "book": Preset(model={**model, "lr": 0.1}, data={"batch_size": 256}, train={"max_epochs": 10},
                       num_params=7850, summary="Fashion-MNIST, batch 256, lr 0.1, 10 epochs"),
        "tiny": Preset(model={**model, "lr": 0.1},
                       data={"synthetic": True, "num_train": 256, "num_val": 64, "batch_size": 32},
                       train={"max_epochs": 1}, num_params=7850,
                       summary="synthetic stand-in of Fashion-MNIST's shapes"),
    }


@hookimpl
def zoo_register_models(register):
    common = {"chapter": 4, "task": "classification", "dataset": "fashion-mnist",
              "inputs": ["X: float32[batch, 1, 28, 28]"], "outputs": ["logits: float32[batch, 10]"]}
    register(ModelSpec(
        name="softmax-scratch", builder="zoo_softmax.softmax:SoftmaxRegressionScratch", section="4.4",
        summary="Softmax regression from scratch: own stable softmax and cross-entropy",
        presets=_presets({"num_inputs": 784, "num_outputs": 10}), tags=("scratch",), **common))
    register(ModelSpec(
        name="softmax", builder="zoo_softmax.softmax:SoftmaxRegression", section="4.5",
        summary="Softmax regression, concise: nn.LazyLinear and F.cross_entropy",
        presets=_presets({"num_outputs": 10}), tags=("concise",), **common))
