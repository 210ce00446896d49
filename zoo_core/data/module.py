"""`DataModule` and `TensorLoader`: the book's datasets fit in memory, so they are held and batched as tensors.

Batches are tensor slices (or one gather per batch when shuffled), on the training device once the trainer has moved
the loader there: no per-sample Python, no DataLoader workers, no host-to-device copy per step. Shuffling uses the
loader's own generator seeded by (seed, epoch), so the order of any epoch can be replayed (``--resume``) and is the
same on every DDP rank, each of which takes its own strided share.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo_core.book_rng import dataloader_permutation
from zoo_core.hparams import HyperParameters

Batch = tuple[Tensor, ...]


def seeded_generator(seed: int, *purpose: object) -> torch.Generator:
    """A generator for one purpose (a dataset, an epoch's shuffle), seeded from a hash of (purpose, seed).

    Plain ``Generator().manual_seed(seed)`` would replay the stream that ``torch.manual_seed(seed)`` gives the model's
    initialisation: with both seeds 0, a linear model's initial weights would be a scaled copy of the first training
    example. Hashing keeps every stream distinct, and stable across runs and machines.
    """
    digest = hashlib.sha256(repr((seed, *purpose)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


class TensorLoader:
    """Minibatches over equally long tensors, optionally shuffled, sharded and transformed per batch.

    Args:
        tensors: the columns (features ..., label), indexed along dimension 0.
        batch_size: examples per batch (per rank under DDP).
        shuffle: a new permutation each epoch, from ``(seed, epoch)``.
        transform: applied to each batch on the device (a batched resize, a dtype change), never per sample.
        drop_last: drop the final short batch.
        book_shuffle: draw each epoch's permutation from torch's global generator, at the start of the epoch, as
            the book's ``DataLoader(..., shuffle=True)`` draws it (`zoo_core.book_rng.dataloader_permutation`)
            instead of from ``(seed, epoch)``: ``zoo train --rng book``. An epoch's order then depends on everything
            drawn before it, so iterate each epoch once, in order, on one process.
    """

    def __init__(self, tensors: Sequence[Tensor], batch_size: int, shuffle: bool = False, *, seed: int = 0,
                 transform: Callable[[Batch], Batch] | None = None, drop_last: bool = False,
                 book_shuffle: bool = False) -> None:
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorLoader needs one or more tensors of equal length")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.tensors = tuple(tensors)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.transform = transform
        self.drop_last = drop_last
        self.book_shuffle = book_shuffle
        self.rank, self.world_size, self.pad = 0, 1, False
        self.epoch = 0

    # --- configuration, each returning a new loader ---------------------------------------------------------------
    def replace(self, **changes: Any) -> TensorLoader:
        loader = copy.copy(self)
        for name, value in changes.items():
            if not hasattr(loader, name):
                raise AttributeError(name)
            setattr(loader, name, value)
        return loader

    def to(self, device: torch.device | str) -> TensorLoader:
        """The same loader over tensors on `device` (moved once, up front)."""
        return self.replace(tensors=tuple(t.to(device) for t in self.tensors))

    def shard(self, rank: int, world_size: int, pad: bool = True) -> TensorLoader:
        """Rank `rank`'s strided share of each epoch; `pad` repeats a few examples so every rank gets as many
        batches (DDP needs that in training; validation does without, to count every example once)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        return self.replace(rank=rank, world_size=world_size, pad=pad)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # --- iteration -------------------------------------------------------------------------------------------------
    @property
    def dataset_size(self) -> int:
        return len(self.tensors[0])

    @property
    def num_examples(self) -> int:
        """Examples this rank sees per epoch."""
        n, w = self.dataset_size, self.world_size
        return math.ceil(n / w) if self.pad else len(range(self.rank, n, w))

    def __len__(self) -> int:
        n = self.num_examples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def indices(self, epoch: int) -> Tensor | None:
        """The example indices of this rank for `epoch`, or None for "all, in order" (served as slices)."""
        n = self.dataset_size
        if not self.shuffle and self.world_size == 1:
            return None
        if self.shuffle and self.book_shuffle:
            index = dataloader_permutation(n)
        elif self.shuffle:
            index = torch.randperm(n, generator=seeded_generator(self.seed, "shuffle", epoch))
        else:
            index = torch.arange(n)
        if self.world_size > 1:
            if self.pad:
                total = math.ceil(n / self.world_size) * self.world_size
                extra = total - n  # may exceed n on a tiny dataset: repeat as often as needed
                index = torch.cat([index, index.repeat(math.ceil(extra / n))[:extra]])
            index = index[self.rank :: self.world_size]
        return index.to(self.tensors[0].device)

    def iterate(self, epoch: int | None = None, start: int = 0) -> Iterator[Batch]:
        """The batches of `epoch` (default: the one `set_epoch` chose), from batch number `start` on."""
        index = self.indices(self.epoch if epoch is None else epoch)
        b = self.batch_size
        for i in range(start, len(self)):
            if index is None:
                batch = tuple(t[i * b : (i + 1) * b] for t in self.tensors)
            else:
                rows = index[i * b : (i + 1) * b]
                batch = tuple(t[rows] for t in self.tensors)
            yield self.transform(batch) if self.transform else batch

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate()


class DataModule(HyperParameters):
    """Base class of zoo datasets (d2l's ``DataModule``), for data that fits in memory.

    Subclasses record their arguments with ``self.save_hyperparameters()``, and implement `load`, which returns
    the ``"train"`` and ``"val"`` splits as tuples of tensors (features ..., label). `batch_transform` may turn
    stored tensors into model inputs batch-wise on the device (a resize, a dtype conversion).
    """

    batch_size: int

    def load(self) -> dict[str, tuple[Tensor, ...]]:
        """The ``"train"`` and ``"val"`` splits as tensors; called once, then cached."""
        raise NotImplementedError

    def splits(self) -> dict[str, tuple[Tensor, ...]]:
        cached = self.__dict__.get("_splits")
        if cached is None:
            cached = self.__dict__["_splits"] = self.load()
        return cached

    def vocabs(self) -> dict[str, Any]:
        """Text data: the vocabularies (`zoo_core.text.Vocab`) by name (``vocab``, or ``src_vocab`` and
        ``tgt_vocab``). `zoo train` saves each as ``<name>.json`` in the run, so that it predicts on its own."""
        return {}

    def model_hparams(self) -> dict[str, Any]:
        """Model hyper-parameters the data decides (``vocab_size``): `zoo train` passes them to a model that takes
        them, unless ``--set`` gave them. Default: none."""
        return {}

    def batch_transform(self, batch: Batch) -> Batch:
        """Turn a batch of stored tensors into model inputs; identity by default."""
        return batch

    def _loader(self, split: str, shuffle: bool) -> TensorLoader:
        transform = None if type(self).batch_transform is DataModule.batch_transform else self.batch_transform
        return TensorLoader(self.splits()[split], self.batch_size, shuffle=shuffle, transform=transform)

    def train_dataloader(self) -> TensorLoader:
        """The training batches, shuffled each epoch."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> TensorLoader:
        """The validation batches, in order."""
        return self._loader("val", shuffle=False)

    # --- cross-validation and predictions (d2l §5.7: Kaggle house prices) -------------------------------------------
    fold_index: int | None = None
    """Which fold of `k_fold` this data module is (None: the whole data)."""

    def folds(self) -> list[DataModule]:
        """The data modules to cross-validate on before the final fit; empty (the default) means no
        cross-validation. Datasets that want it return ``self.k_fold(k)``."""
        return []

    def k_fold(self, k: int) -> list[DataModule]:
        """The book's k-fold split of the training data: fold j validates on rows ``[j*n//k, (j+1)*n//k)``
        (``n // k`` rows each; rows past ``k * (n // k)`` always train) and trains on the others."""
        train = self.splits()["train"]
        n = len(train[0])
        size = n // k
        if k < 2 or size == 0:
            raise ValueError(f"k-fold needs 2 <= k <= {n} (the training rows), got {k}")
        folds = []
        for j in range(k):
            inside = torch.zeros(n, dtype=torch.bool)
            inside[j * size:(j + 1) * size] = True
            fold = copy.copy(self)
            fold.__dict__["_splits"] = {"train": tuple(t[~inside] for t in train),
                                        "val": tuple(t[inside] for t in train)}
            fold.fold_index = j
            folds.append(fold)
        return folds

    def predict_inputs(self) -> tuple[Tensor, ...] | None:
        """Unlabelled inputs the zoo predicts after training (a Kaggle test set), or None (the default)."""
        return None

    def write_predictions(self, run_dir: Path, predictions: Tensor) -> Path:
        """Write `predictions` (of `predict_inputs`, from `Model.predict`) into `run_dir`; returns the file."""
        raise NotImplementedError(f"{type(self).__name__} has predict_inputs() but no write_predictions()")

    def example_batch(self, batch_size: int | None = None) -> Batch:
        """The first validation batch (optionally of another size): a fixed batch for tests and checks. Data kept
        whole for cross-validation (no validation split) gives its first training rows instead."""
        loader = self.val_dataloader() if len(self.splits()["val"][0]) else self._loader("train", shuffle=False)
        if batch_size is not None:
            loader = loader.replace(batch_size=batch_size)
        return next(iter(loader))
