"""Registers chapter 3's models. Imports no torch: builders are named as strings."""

from zoo_core import ModelSpec, Preset, hookimpl

REGRESSION = {"task": "regression", "chapter": 3}


def _linreg_presets(num_params: int) -> dict[str, Preset]:
    return {
        "book": Preset(model={"lr": 0.03}, data={"batch_size": 32}, train={"max_epochs": 3}, num_params=num_params,
                       summary="w = [2, -3.4], b = 4.2, 1000 examples, lr 0.03, 3 epochs"),
        "tiny": Preset(model={"lr": 0.03}, data={"num_train": 64, "num_val": 32, "batch_size": 16},
                       train={"max_epochs": 1}, num_params=num_params),
    }


def _weight_decay_presets(penalty: dict) -> dict[str, Preset]:
    return {
        "book": Preset(model={"num_inputs": 200, "lr": 0.01, **penalty}, data={"num_inputs": 200},
                       train={"max_epochs": 10}, num_params=201,
                       summary="200 inputs, 20 training examples, batch 5, lr 0.01, 10 epochs"),
        "tiny": Preset(model={"num_inputs": 8, "lr": 0.01, **penalty},
                       data={"num_inputs": 8, "num_train": 16, "num_val": 16, "batch_size": 4},
                       train={"max_epochs": 1}, num_params=9,
                       inputs=["X: float32[batch, 8]"]),
    }


@hookimpl
def zoo_register_models(register):
    io = {"inputs": ["X: float32[batch, 2]"], "outputs": ["y_hat: float32[batch, 1]"]}
    register(ModelSpec(
        name="linreg-scratch", builder="zoo_linear.linreg:LinearRegressionScratch", section="3.4",
        summary="Linear regression from scratch: own parameters, squared loss and minibatch SGD",
        dataset="synthetic-regression", presets=_linreg_presets(3), tags=("scratch",), **io, **REGRESSION))
    register(ModelSpec(
        name="linreg", builder="zoo_linear.linreg:LinearRegression", section="3.5",
        summary="Linear regression, concise: nn.LazyLinear, MSELoss, torch.optim.SGD",
        dataset="synthetic-regression", presets=_linreg_presets(3), tags=("concise",), **io, **REGRESSION))

    io = {"inputs": ["X: float32[batch, 200]"], "outputs": ["y_hat: float32[batch, 1]"]}
    register(ModelSpec(
        name="weight-decay-scratch", builder="zoo_linear.linreg:WeightDecayScratch", section="3.7",
        summary="Weight decay from scratch: L2 penalty lambd * ||w||^2 / 2 in the loss",
        dataset="weight-decay-data", presets=_weight_decay_presets({"lambd": 3.0}), tags=("scratch",),
        **io, **REGRESSION))
    register(ModelSpec(
        name="weight-decay", builder="zoo_linear.linreg:WeightDecay", section="3.7",
        summary="Weight decay, concise: SGD weight_decay on the weights only",
        dataset="weight-decay-data", presets=_weight_decay_presets({"wd": 3.0}), tags=("concise",),
        **io, **REGRESSION))
