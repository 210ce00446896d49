"""Kaggle house prices (d2l §5.7): the book's table pipeline, k-fold cross-validation, and a submission file.

Features (the book's recipe, DESIGN §6): the training and test tables minus ``Id`` (and the label) are stacked;
numeric columns are standardised over both and their missing values set to 0 (the mean); categorical columns are
one-hot encoded with a column for "missing". That gives 330 features. The target is the log of the sale price, so the
squared error is the book's log-MSE. Cross-validation is the book's (`DataModule.k_fold`); the zoo then refits on all
1,460 rows and writes ``submission.csv`` for the 1,459 test rows from that model (the book averages its five fold
models instead; the zoo keeps one model so that the exported model is the one that made the submission).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core import BOOK_URL, DataFile, DataModule, Model, ZooError, atomic_path, find_data_files, seeded_generator

LABEL = "SalePrice"
FILES = (
    DataFile("kaggle_house_pred_train.csv", "585e9cc93e70b39160e7921475f9bcd7d31219ce",
             BOOK_URL + "kaggle_house_pred_train.csv"),
    DataFile("kaggle_house_pred_test.csv", "fa19780a7b011d9b009e8bff8e99922a8ee2eb90",
             BOOK_URL + "kaggle_house_pred_test.csv"),
)
NUM_FEATURES = 330  # after one-hot encoding the book's tables


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ZooError("house-prices reads its tables with pandas: pip install 'zoo-mlp[house]'") from None
    return pandas


def preprocess(train: Any, test: Any) -> Any:
    """The book's features of the stacked tables (train rows first), as a float32 frame."""
    pd = _pandas()
    features = pd.concat((train.drop(columns=["Id", LABEL]), test.drop(columns=["Id"])))
    numeric = features.select_dtypes(include="number").columns
    features[numeric] = (features[numeric] - features[numeric].mean()) / features[numeric].std()
    features[numeric] = features[numeric].fillna(0)
    return pd.get_dummies(features, dummy_na=True).astype("float32")


class KaggleHouse(DataModule):
    """The Kaggle house-price tables: every labelled row for training and `num_folds`-fold cross-validation (no
    separate validation split), and the test rows for `predict_inputs`.

    Args:
        batch_size: rows per batch.
        num_folds: k of the k-fold cross-validation `zoo train` runs before its final fit (1: none).
        synthetic: instead of the CSV files, a random table of `num_features` columns with a linear log-price
            (`num_train` labelled rows, plus 64 validation and 32 test rows), for fast tests.
        num_train, num_features, seed: the synthetic table's size and seed.
        data_dir: where to look first for the files (not a hyper-parameter).
    """

    def __init__(self, batch_size: int = 64, num_folds: int = 5, synthetic: bool = False, num_train: int = 128,
                 num_features: int = 8, seed: int = 0, data_dir: str | None = None) -> None:
        self.save_hyperparameters(ignore=["data_dir"])
        self.data_dir = data_dir
        if num_folds < 1:
            raise ZooError(f"num_folds must be at least 1, got {num_folds}")

    @classmethod
    def locate(cls, data_dir: str | None = None, download: bool = True) -> Path:
        """The folder holding both CSV files (checked), downloading them from the book's server if needed."""
        return find_data_files("kaggle-house", FILES, data_dir, download=download)

    def load(self) -> dict[str, tuple[Tensor, ...]]:
        if self.synthetic:
            return self._synthetic()
        pd = _pandas()
        root = self.locate(self.data_dir)
        train, test = (pd.read_csv(root / f.path) for f in FILES)
        features = torch.from_numpy(preprocess(train, test).to_numpy())
        n = len(train)
        X, y = features[:n], torch.tensor(train[LABEL].to_numpy(), dtype=torch.float32).log().reshape(-1, 1)
        self._test = features[n:], torch.tensor(test["Id"].to_numpy())
        return {"train": (X, y), "val": (X[:0], y[:0])}

    def _synthetic(self) -> dict[str, tuple[Tensor, ...]]:
        g = seeded_generator(self.seed, "kaggle-house-synthetic")
        w = torch.randn(self.num_features, 1, generator=g) * 0.3

        def table(n: int) -> tuple[Tensor, Tensor]:
            X = torch.randn(n, self.num_features, generator=g)
            return X, 12.0 + X @ w + 0.05 * torch.randn(n, 1, generator=g)  # log prices around e^12 = 163k

        X_test, _ = table(32)
        self._test = X_test, torch.arange(10_001, 10_033)
        return {"train": table(self.num_train), "val": table(64)}

    def folds(self) -> list[DataModule]:
        return self.k_fold(self.num_folds) if self.num_folds > 1 and self.fold_index is None else []

    def predict_inputs(self) -> tuple[Tensor, ...]:
        """The test rows; `zoo train` asks for them before training, so a missing pandas (which writes the
        submission) fails then, not after every fold and the final fit."""
        _pandas()
        self.splits()
        return (self._test[0],)

    def write_predictions(self, run_dir: Path, predictions: Tensor) -> Path:
        """``submission.csv``: the Kaggle format, ``Id,SalePrice`` (prices, not log prices)."""
        pd = _pandas()
        path = Path(run_dir) / "submission.csv"
        frame = pd.DataFrame({"Id": self._test[1].numpy(), LABEL: predictions.reshape(-1).double().numpy()})
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        return path


class HousePrices(Model):
    """Regression of log sale prices: the book's linear model (no `hiddens`) or an MLP.

    The loss is the mean squared error of log prices (the book's log-MSE); `predict` returns prices.
    """

    def __init__(self, num_inputs: int = NUM_FEATURES, hiddens: list[int] | None = None, dropout: float = 0.0,
                 lr: float = 0.01, weight_decay: float = 0.0, optimizer: str = "sgd") -> None:
        super().__init__()
        self.save_hyperparameters()
        if optimizer not in ("sgd", "adam"):
            raise ZooError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        layers: list[nn.Module] = []
        width = num_inputs
        for h in hiddens or []:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def init_weights(self) -> None:
        if not self.hiddens:  # the book's LinearRegression: w ~ N(0, 0.01^2), b = 0
            nn.init.normal_(self.net[-1].weight, 0, 0.01)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, X: Tensor) -> Tensor:  # (batch, num_inputs) -> (batch, 1) log prices
        return self.net(X)

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(y_hat, y)

    def predict(self, X: Tensor) -> Tensor:
        """Sale prices."""
        with torch.no_grad():
            return self(X).exp()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.SGD
        return cls(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.randn(batch_size, self.num_inputs),)

