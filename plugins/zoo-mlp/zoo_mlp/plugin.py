"""Registers chapter 5's models and the Kaggle house-price data. Imports no torch: builders are named as strings."""

from zoo_core import DataSpec, ModelSpec, Preset, hookimpl

FASHION = {"chapter": 5, "task": "classification", "dataset": "fashion-mnist",
           "inputs": ["X: float32[batch, 1, 28, 28]"], "outputs": ["logits: float32[batch, 10]"]}
TINY_DATA = {"synthetic": True, "num_train": 256, "num_val": 64, "batch_size": 32}
BOOK_DATA = {"batch_size": 256}


def _presets(book: dict, tiny: dict, params: tuple[int, int], summary: str) -> dict[str, Preset]:
    return {
        "book": Preset(model={**book, "lr": 0.1}, data=BOOK_DATA, train={"max_epochs": 10}, num_params=params[0],
                       summary=summary),
        "tiny": Preset(model={**tiny, "lr": 0.1}, data=TINY_DATA, train={"max_epochs": 1}, num_params=params[1],
                       summary="narrow hidden layers on a synthetic stand-in of Fashion-MNIST"),
    }


MLP_BOOK = "784-256-10 ReLU, Fashion-MNIST, batch 256, lr 0.1, 10 epochs"
DROPOUT_BOOK = "784-256-256-10 ReLU, dropout 0.5/0.5, Fashion-MNIST, batch 256, lr 0.1, 10 epochs"
DROPOUT_TINY = {"num_hiddens_1": 32, "num_hiddens_2": 32}


@hookimpl
def zoo_register_datasets(register):
    register(DataSpec("kaggle-house", "zoo_mlp.house:KaggleHouse",
                      "Kaggle house prices: 1,460 labelled / 1,459 test rows, 79 features (d2l 5.7)",
                      source="https://www.kaggle.com/c/house-prices-advanced-regression-techniques (book's copies)"))


@hookimpl
def zoo_register_models(register):
    register(ModelSpec(
        name="mlp-scratch", builder="zoo_mlp.mlp:MLPScratch", section="5.2",
        summary="MLP from scratch: own parameters and ReLU, one hidden layer",
        presets=_presets({"num_hiddens": 256}, {"num_hiddens": 32}, (203_530, 25_450), MLP_BOOK),
        tags=("scratch",), **FASHION))
    register(ModelSpec(
        name="mlp", builder="zoo_mlp.mlp:MLP", section="5.2",
        summary="MLP, concise: Flatten, LazyLinear, ReLU, LazyLinear",
        presets=_presets({"num_hiddens": 256}, {"num_hiddens": 32}, (203_530, 25_450), MLP_BOOK),
        tags=("concise",), **FASHION))
    register(ModelSpec(
        name="dropout-mlp-scratch", builder="zoo_mlp.mlp:DropoutMLPScratch", section="5.6",
        summary="Dropout from scratch: own dropout_layer after each hidden ReLU, in training only",
        presets=_presets({}, DROPOUT_TINY, (269_322, 26_506), DROPOUT_BOOK), tags=("scratch",), **FASHION))
    register(ModelSpec(
        name="dropout-mlp", builder="zoo_mlp.mlp:DropoutMLP", section="5.6",
        summary="Dropout, concise: nn.Dropout after each hidden ReLU",
        presets=_presets({}, DROPOUT_TINY, (269_322, 26_506), DROPOUT_BOOK), tags=("concise",), **FASHION))
    register(ModelSpec(
        name="house-prices", builder="zoo_mlp.house:HousePrices", chapter=5, section="5.7", task="regression",
        summary="Kaggle house prices: 5-fold cross-validated log-MSE, then submission.csv",
        dataset="kaggle-house", inputs=["X: float32[batch, 330]"], outputs=["log_price: float32[batch, 1]"],
        presets={
            "book": Preset(model={"lr": 0.01}, data={"batch_size": 64, "num_folds": 5}, train={"max_epochs": 10},
                           num_params=331, summary="linear regression, lr 0.01, batch 64, 10 epochs, 5-fold CV"),
            "mlp": Preset(model={"hiddens": [256], "lr": 0.001,
                                 "optimizer": "adam"},
                          data={"batch_size": 64, "num_folds": 5}, train={"max_epochs": 10}, num_params=84_993,
                          summary="the zoo's MLP: 330-256-1 ReLU, Adam"),
            "tiny": Preset(model={"num_inputs": 8, "lr": 0.01},
                           data={"synthetic": True, "num_features": 8, "num_train": 128, "num_folds": 2,
                                 "batch_size": 16},
                           train={"max_epochs": 1}, num_params=9, inputs=["X: float32[batch, 8]"],
                           summary="a synthetic 8-column table, 2-fold CV"),
        }))
