"""Fashion-MNIST (d2l §4.2), read by torchvision and held as tensors.

Pixels are scaled to [0, 1] once, when the data is loaded (the book's ``ToTensor``; no normalisation). Resizing
(224 px for AlexNet, 96 px for ResNet) happens per batch on the device, as one batched interpolation, instead of per
image on the CPU as the book's transforms do.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo_core.data.files import DataFile, find_data_files
from zoo_core.data.module import Batch, DataModule, seeded_generator

RAW = "FashionMNIST/raw/"
FILES = (
    DataFile(RAW + "train-images-idx3-ubyte", "b9bd999c0106c9b8b4b0cefce58c9a6060f27095"),
    DataFile(RAW + "train-labels-idx1-ubyte", "4bccf37222e01638381eaa326bf730337a597267"),
    DataFile(RAW + "t10k-images-idx3-ubyte", "880056926db704f9f713097915f99da346f5b1d1"),
    DataFile(RAW + "t10k-labels-idx1-ubyte", "958122e8b4b97fd4e71eca2d08ef754ed77c3ad9"),
)
LABELS = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")


def _download(root: Path) -> None:
    import torchvision

    torchvision.datasets.FashionMNIST(root, train=True, download=True)  # fetches and checks all four files


class FashionMNIST(DataModule):
    """Fashion-MNIST: 60,000 training and 10,000 validation (the test set, as in the book) 28x28 grey images.

    Args:
        batch_size: examples per batch.
        resize: side (or ``[height, width]``) to resize images to, batch-wise; None keeps 28x28.
        num_train, num_val: use only the first examples of each split (None: all).
        synthetic: instead of the real files, a stand-in of the same shapes (one noisy template per class) for
            fast tests; it needs no data on disk.
        seed: seed of the synthetic stand-in.
        data_dir: where to look first for the files (not a hyper-parameter: it is not recorded).
    """

    labels = LABELS

    def __init__(self, batch_size: int = 64, resize: int | list[int] | None = None, num_train: int | None = None,
                 num_val: int | None = None, synthetic: bool = False, seed: int = 0,
                 data_dir: str | None = None) -> None:
        self.save_hyperparameters(ignore=["data_dir"])
        self.data_dir = data_dir
        size = [resize, resize] if isinstance(resize, int) else resize
        self._size = None if size is None or list(size) == [28, 28] else tuple(size)

    @classmethod
    def locate(cls, data_dir: str | None = None, download: bool = True) -> Path:
        """The data folder holding the four raw files (checked), downloading them through torchvision if needed."""
        return find_data_files("fashion-mnist", FILES, data_dir, download=_download if download else False)

    def load(self) -> dict[str, tuple[Tensor, ...]]:
        if self.synthetic:
            return self._synthetic()
        import torchvision

        root = self.locate(self.data_dir)
        splits = {}
        for split, train, limit in (("train", True, self.num_train), ("val", False, self.num_val)):
            ds = torchvision.datasets.FashionMNIST(root, train=train)
            images, targets = ds.data[:limit], ds.targets[:limit]
            splits[split] = (images.unsqueeze(1).float().div_(255), targets.long())
        return splits

    def _synthetic(self) -> dict[str, tuple[Tensor, ...]]:
        generator = seeded_generator(self.seed, "fashion-mnist-synthetic")
        templates = torch.rand(10, 1, 28, 28, generator=generator)
        splits = {}
        for split, n in (("train", self.num_train or 256), ("val", self.num_val or 64)):
            y = torch.randint(0, 10, (n,), generator=generator)
            X = 0.7 * templates[y] + 0.3 * torch.rand(n, 1, 28, 28, generator=generator)
            splits[split] = (X, y)
        return splits

    def batch_transform(self, batch: Batch) -> Batch:
        if self._size is None:
            return batch
        X, y = batch
        return F.interpolate(X, size=self._size, mode="bilinear", align_corners=False), y
