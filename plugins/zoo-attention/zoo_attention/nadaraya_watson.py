"""Nadaraya-Watson kernel regression as attention pooling (d2l 1.0 §11.2, "Attention Pooling by Similarity").

The estimate at a query q is a weighted mean of the training labels (the values) y_i, each weighted by how similar
q is to its training input (the key) x_i::

    f(q) = sum_i softmax_i(score(q - x_i)) y_i,     score = log alpha, the log of the kernel

with the book's four kernels of a distance d (scaled by a width h: d = (q - x_i) / h):

    gaussian     alpha = exp(-d^2 / 2)          (h = 0.5: the book's exp(-2 (q - x_i)^2))
    boxcar       alpha = 1 if |d| < 1, else 0   (h = 1)
    constant     alpha = 1                      (the mean of all labels, whatever q)
    epanechikov  alpha = max(0, 1 - |d|)        (h = 1)

Writing the kernel as a softmax of log-kernel scores makes the estimator an attention layer (d2l §11.3): the
boxcar's and the Epanechikov kernel's zeros are scores of -1e6, as in the book's ``masked_softmax``, so a query with
no key in its window gets uniform weights (the constant kernel's estimate) where the book's ``k / k.sum(0)`` gives
0 / 0 = NaN.

``trainable=True`` is the previous edition's *parametric* attention pooling (d2l 0.17 §10.2.4): a Gaussian kernel
with a learned inverse width w, ``alpha = exp(-((q - x_i) w)^2 / 2)``, w drawn U(0, 1) as there, trained by
full-batch SGD on the squared error, where each training point is predicted from all the *other* training points
(leave-one-out: with itself among the keys, the best w would be infinite, and f would interpolate the noise).

The estimator keeps its training set: the keys and values are buffers, saved with the weights and constant in the
ONNX graph, ``x: float32[batch] -> y_hat: float32[batch]``. The model regenerates them from the data's
hyper-parameters (`NadarayaWatsonData.model_hparams` hands them over), so model and data always agree.

The data, as in the 1.0 edition: f(x) = 2 sin(x) + x, 40 training inputs x ~ U(0, 5) (sorted, so attention heatmaps
read as in the book), labels f(x) + N(0, 1); validation on the book's test grid x = 0, 0.1, ..., 4.9 against the
noise-free f (the book's ``y_test``), so the validation loss measures the fitted curve against the truth.

Where the book's text and code disagree, the code wins: its text says 50 samples, its code draws ``n = 40``; its
text's Gaussian ``exp(||k - q||^2 / 2)`` lacks the minus sign of its code's ``exp(-2 x^2)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core import DataModule, Model, ZooError
from zoo_core.data.module import seeded_generator

KERNELS = ("gaussian", "boxcar", "constant", "epanechikov")
BOOK_WIDTHS = {"gaussian": 0.5, "boxcar": 1.0, "constant": 1.0, "epanechikov": 1.0}
"""The widths of the book's kernels (its code: ``exp(-2 x^2)``, ``|x| < 1``, ``1``, ``max(1 - |x|, 0)``)."""
MASKED = -1e6  # the score of a zero kernel value (the book's masked_softmax): exp(-1e6 - max) is exactly 0


def f(x: Tensor) -> Tensor:
    """The book's regression target, 2 sin(x) + x."""
    return 2 * torch.sin(x) + x


def synthetic_data(num_train: int = 40, noise: float = 1.0, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The training set: `num_train` sorted inputs x ~ U(0, 5) and labels f(x) + N(0, noise^2), from `seed` alone."""
    generator = seeded_generator(seed, "nadaraya-watson")
    x, _ = torch.sort(torch.rand(num_train, generator=generator) * 5)
    return x, f(x) + torch.randn(num_train, generator=generator) * noise


def query_grid() -> Tensor:
    """The book's test inputs, ``arange(0, 5, 0.1)``: 50 points."""
    return torch.arange(0, 5, 0.1)


def kernel_scores(d: Tensor, kernel: str) -> Tensor:
    """log alpha(d) for a scaled distance `d` (any shape); where alpha is 0, the score is -1e6."""
    if kernel == "gaussian":
        return -d**2 / 2
    if kernel == "constant":
        return torch.zeros_like(d)
    inside = d.abs() < 1
    if kernel == "boxcar":
        return torch.where(inside, 0.0, MASKED)
    if kernel == "epanechikov":  # log(1 - |d|) inside the window; |d| taken as 0 outside it, so no branch is NaN
        return torch.where(inside, torch.log1p(-torch.where(inside, d.abs(), 0.0)), MASKED)
    raise ValueError(f"unknown kernel {kernel!r}; one of {', '.join(KERNELS)}")


class NadarayaWatsonData(DataModule):
    """The book's synthetic 1-D regression data (d2l §11.2): train on noisy samples, validate on the true f.

    Splits: ``train`` = (x (num_train,), y (num_train,)), ``val`` = (the 50-point test grid, f on it). One
    full batch by default (the previous edition trains its parametric model on the whole set at each step).
    """

    def __init__(self, num_train: int = 40, noise: float = 1.0, batch_size: int = 40, seed: int = 0) -> None:
        self.save_hyperparameters()

    def load(self) -> dict[str, tuple[Tensor, ...]]:
        x_val = query_grid()
        return {"train": synthetic_data(self.num_train, self.noise, self.seed), "val": (x_val, f(x_val))}

    def model_hparams(self) -> dict[str, object]:
        """The model pools over this data's training set: it regenerates it from these."""
        return {"num_train": self.num_train, "noise": self.noise, "seed": self.seed}


class NadarayaWatson(Model):
    """Nadaraya-Watson regression: attention pooling of the training labels by kernel similarity of the inputs.

    Args:
        kernel: ``gaussian``, ``boxcar``, ``constant`` or ``epanechikov``.
        width: the kernel's width h (distances are divided by it); None: the book's width for the kernel.
        trainable: learn the inverse width w of a Gaussian kernel (d2l 0.17 §10.2.4), initialised U(0, 1).
        lr: SGD learning rate on the mean squared error. The previous edition's lr 0.5 on the *summed* squared
            error / 2 is lr 10 on the mean for 40 points; on this data (noise 1, not 0.5) its first step jumps past
            the leave-one-out optimum (w near 3) to w = 6-10, and its 5 epochs end at validation MSE 0.19-0.35
            (seeds 0-2), worse than the fixed kernel's 0.096. The `trainable` preset takes lr 2 and 10 epochs: the
            loss is even in w, so dL/dw vanishes at w = 0 and a draw near 0 (seed 3: w = 0.004) needs about 8
            steps to leave the flat region; with 10, seeds 0-19 all end at w = 2.67-2.96, validation MSE
            0.0785-0.0796 (measured).
        num_train, noise, seed: the training set the model pools over (see `synthetic_data`): the data's
            hyper-parameters of the same names, so that ``--set`` changes both.

    Parameters: ``w`` (1,), the inverse width, frozen unless `trainable`. Buffers: ``keys`` and ``values``
    (num_train,), the training inputs and labels.
    """

    def __init__(self, kernel: str = "gaussian", width: float | None = None, trainable: bool = False,
                 lr: float = 2.0, num_train: int = 40, noise: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        if kernel not in KERNELS:
            raise ZooError(f"unknown kernel {kernel!r}; one of {', '.join(KERNELS)}")
        if trainable and (kernel != "gaussian" or width is not None):
            raise ZooError("trainable=True learns the width of a gaussian kernel from U(0, 1): give kernel="
                             "gaussian and no width (the other kernels' widths get no useful gradient)")
        if width is not None and width <= 0:
            raise ZooError(f"width must be positive, got {width}")
        w = torch.rand(1) if trainable else torch.tensor([1 / (width or BOOK_WIDTHS[kernel])])
        self.w = nn.Parameter(w, requires_grad=trainable)
        keys, values = synthetic_data(num_train, noise, seed)
        self.register_buffer("keys", keys)
        self.register_buffer("values", values)

    def attention_weights(self, queries: Tensor, leave_one_out: bool = False) -> Tensor:
        """Weights (batch, num_train), each row summing to 1. `leave_one_out`: a query equal to a training input
        (a training query) gives that key weight 0 (the data's inputs are distinct: drawn from U(0, 5))."""
        d = (queries.unsqueeze(-1) - self.keys) * self.w  # (batch, num_train)
        scores = kernel_scores(d, self.kernel)
        if leave_one_out:
            scores = torch.where(queries.unsqueeze(-1) == self.keys, MASKED, scores)
        return F.softmax(scores, dim=-1)

    def forward(self, x: Tensor, leave_one_out: bool = False) -> Tensor:  # (batch,) -> (batch,)
        return self.attention_weights(x, leave_one_out) @ self.values

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(y_hat, y)

    def training_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """The leave-one-out squared error: each training point predicted from the others. A fixed kernel has
        nothing to learn: its loss is handed to the trainer as a leaf (backward and the SGD step are no-ops)."""
        x, y = batch
        loss = self.loss(self(x, leave_one_out=True), y)
        return {"loss": loss if loss.requires_grad else loss.requires_grad_()}

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.rand(batch_size) * 5,)
