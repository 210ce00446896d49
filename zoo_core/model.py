"""`Model`, the base of every zoo model, and `Classifier` (d2l §3.2 and §4.3, made production-grade).

A model is an `nn.Module` that also knows how to train: its loss, what one step computes (returned as tensors, so
the trainer can accumulate metrics on the device without a host sync), its optimiser, and what its inputs look like
(for export, tests and lazy-layer materialisation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.hparams import HyperParameters

Batch = Sequence[Tensor]
"""A batch is a tuple of tensors, the label last (the book's convention)."""


class Optimizer(Protocol):
    """What the trainer needs of an optimiser; `torch.optim` optimisers and the book's from-scratch SGD both fit."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...
    def step(self) -> Any: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


class Model(nn.Module, HyperParameters):
    """Base class of zoo models.

    Subclasses call ``super().__init__()`` then ``self.save_hyperparameters()`` in their constructor, define
    `forward`, `loss` and `example_inputs`, and may override `configure_optimizers` (SGD on ``self.lr`` by default)
    and `init_weights` (run once the lazy layers have their shapes).
    """

    metrics: ClassVar[tuple[str, ...]] = ("loss",)
    """The names `step` returns; the trainer logs them as ``train_<name>`` and ``val_<name>``."""

    monitor: ClassVar[tuple[str, str]] = ("val_loss", "min")
    """The validation metric that says which epoch is best (early stopping), and whether ``min`` or ``max`` wins."""

    unit: ClassVar[str] = "examples"
    """What `batch_weight` counts, and so what training speed is reported in: ``examples`` or ``tokens``."""

    replays_book_rng: bool = False
    """Whether `init_like_book` is implemented, so that ``zoo train --rng book`` can replay the d2l reference's
    random stream (`zoo_core.book_rng`)."""

    book_rng: bool = False
    """Set by `init_like_book`: training draws its randomness (dropout masks) as the book's code does."""

    def init_like_book(self) -> None:
        """Draw the parameters again from torch's global generator in the order the book's code draws them, defer
        the initialisation of the layers the book makes lazy (`zoo_core.book_rng.defer_init`), and set `book_rng`.
        The trainer calls it with ``--rng book`` right after ``torch.manual_seed(seed)``. Models that can, override it
        and set `replays_book_rng`; the default raises NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} cannot replay the book's random stream")

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """The training objective, a scalar tensor (mean over the batch)."""
        raise NotImplementedError

    def step(self, batch: Batch) -> dict[str, Tensor]:
        """Forward and loss on one batch: a dict of scalar tensors with a key per name in `metrics`."""
        return {"loss": self.loss(self(*batch[:-1]), batch[-1])}

    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        """One training batch; the trainer back-propagates ``["loss"]``. Never call ``.item()`` here."""
        return self.step(batch)

    def validation_step(self, batch: Batch) -> dict[str, Tensor]:
        """One validation batch, run in eval mode without gradients."""
        return self.step(batch)

    def batch_weight(self, batch: Batch) -> int | Tensor:
        """How much a batch counts in epoch averages: its number of labels (examples, or tokens). A 0-dim tensor
        is fine (the non-padding tokens of a translation batch): it is summed on the device, without a host sync."""
        return batch[-1].numel()

    def epoch_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Metrics derived from an epoch's weighted means, for logging: a language model adds its perplexity,
        ``exp`` of the token-weighted mean cross-entropy (not a mean of per-batch perplexities). Default: as is."""
        return means

    @torch.no_grad()
    def predict(self, *inputs: Tensor) -> Tensor:
        """What a user gets for `inputs` (eval mode is the caller's): the forward pass by default; a model trained
        on a transformed target maps it back here (log prices to prices)."""
        return self(*inputs)

    def configure_optimizers(self) -> Optimizer:
        """The optimiser: minibatch SGD on ``self.lr``, the book's default."""
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        """Random inputs of the right shapes and dtypes, for export, tests and materialisation."""
        raise NotImplementedError(f"{type(self).__name__} must define example_inputs()")

    # --- graphs: what `zoo export` writes and `zoo_core.decoding` drives (see `zoo_core.GraphSpec`) -------------------
    def graph_module(self, name: str) -> nn.Module:
        """The module exported as graph `name`: its ``forward(*inputs)`` returns the graph's outputs in the order
        its `GraphSpec` declares. Default: the model itself for ``model``; generation models add their encoder and
        step modules (sharing the model's parameters)."""
        if name == "model":
            return self
        raise KeyError(f"{type(self).__name__} has no graph {name!r}")

    def graph_inputs(self, name: str, dims: Mapping[str, int]) -> tuple[Tensor, ...]:
        """Random valid inputs of graph `name`, with each symbolic dimension at the size `dims` gives
        (``batch``, ``seq`` ...): export traces on them and parity checks at other sizes. Default: `example_inputs`
        at ``dims["batch"]``, which suits models whose only symbolic dimension is the batch."""
        if name == "model":
            return self.example_inputs(dims.get("batch", 2))
        raise KeyError(f"{type(self).__name__} has no graph {name!r}")

    def init_weights(self) -> None:
        """Initialise parameters; called by `materialize` once lazy layers have their shapes. Default: keep."""

    def has_lazy_parameters(self) -> bool:
        return any(isinstance(p, nn.parameter.UninitializedParameter) for p in self.parameters()) or any(
            isinstance(b, nn.parameter.UninitializedBuffer) for b in self.buffers())

    @torch.no_grad()
    def materialize(self, inputs: Sequence[Tensor] | None = None) -> Model:
        """Give lazy layers their shapes with one forward pass, then `init_weights` (d2l's ``apply_init``).

        The book calls its initialiser from ``__init__``, where lazy layers have no weights yet and the call does
        nothing; here initialisation always follows materialisation.
        """
        if self.has_lazy_parameters():
            was_training = self.training
            self.eval()  # no batch-norm statistics update from a dummy batch
            self(*(inputs if inputs is not None else self.example_inputs(2)))
            self.train(was_training)
        self.init_weights()
        return self

    @torch.no_grad()
    def layer_summary(self, inputs: Sequence[Tensor] | None = None) -> list[tuple[str, str, tuple[int, ...]]]:
        """The output shape of each layer, as the book's ``layer_summary`` prints it: (name, class, shape) per
        top-level child of ``self.net`` when the model keeps its layers in an `nn.Sequential` called ``net``
        (the book's convention), else per direct child of the model, in call order, on `inputs` (default: the
        example inputs at batch size 1), in eval mode.
        """
        net = getattr(self, "net", None)
        layers = net if isinstance(net, nn.Sequential) else self
        rows: list[tuple[str, str, tuple[int, ...]]] = []

        def record(name: str) -> Any:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                first = output[0] if isinstance(output, (tuple, list)) else output
                shape = tuple(first.shape) if isinstance(first, Tensor) else ()
                rows.append((name, type(module).__name__, shape))
            return hook

        children = list(layers.named_children()) or [("", self)]  # a model of bare parameters is one layer
        handles = [child.register_forward_hook(record(name)) for name, child in children]
        was_training = self.training
        try:
            self.eval()
            self(*(inputs if inputs is not None else self.example_inputs(1)))
        finally:
            self.train(was_training)
            for handle in handles:
                handle.remove()
        return rows

    def num_params(self) -> int:
        """Number of parameters, each shared (tied) parameter counted once."""
        return sum(p.numel() for p in self.parameters())


class Classifier(Model):
    """A model whose output's last dimension holds class scores (logits); adds accuracy."""

    metrics: ClassVar[tuple[str, ...]] = ("loss", "acc")
    monitor: ClassVar[tuple[str, str]] = ("val_acc", "max")

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(y_hat.reshape(-1, y_hat.shape[-1]), y.reshape(-1))

    def accuracy(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """Fraction of predictions (argmax of the last dimension) equal to the labels, as a tensor."""
        return (y_hat.argmax(dim=-1) == y).float().mean()

    def step(self, batch: Batch) -> dict[str, Tensor]:
        y_hat, y = self(*batch[:-1]), batch[-1]
        return {"loss": self.loss(y_hat, y), "acc": self.accuracy(y_hat, y)}
