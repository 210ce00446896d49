"""Data (`zoo_core.data`): tensor batching, the `DataModule` base, dataset files, the book's datasets.

The real Fashion-MNIST tests are marked ``data`` and find the files only through ``$ZOO_DATA`` (or the other data
folders) via `zoo_core.testing.require_data`, which skips when they are absent.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from zoo_core import DataNotFoundError, IntegrityError
from zoo_core.data import DataFile, DataModule, TensorLoader, data_dirs, find_data_files
from zoo_core.data.fashion_mnist import FashionMNIST
from zoo_core.data.synthetic import SyntheticRegression, WeightDecayData
from zoo_core.testing import require_data


def columns(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features whose row i is [i, 10 i] and labels i: every batch says which examples it holds, and whether its
    columns stayed aligned."""
    y = torch.arange(n)
    return torch.stack([y, 10 * y], dim=1).float(), y


def labels(batches) -> list[int]:
    return [int(v) for batch in batches for v in batch[-1]]


def assert_aligned(batches) -> None:
    for X, y in batches:
        assert torch.equal(X[:, 0].long(), y) and torch.equal(X[:, 1].long(), 10 * y)


# --- TensorLoader -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_yields_every_example_once_per_epoch(shuffle):
    loader = TensorLoader(columns(10), batch_size=4, shuffle=shuffle)
    for epoch in range(3):
        batches = list(loader.iterate(epoch))
        assert [len(y) for _, y in batches] == [4, 4, 2]  # the last batch is short
        assert sorted(labels(batches)) == list(range(10))
        assert_aligned(batches)
    if not shuffle:
        assert labels(loader) == list(range(10))


def test_loader_drop_last():
    loader = TensorLoader(columns(10), batch_size=4, shuffle=True, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    assert all(len(y) == 4 for _, y in batches)
    assert len(set(labels(batches))) == 8
    assert len(TensorLoader(columns(8), batch_size=4, drop_last=True)) == 2
    assert len(TensorLoader(columns(3), batch_size=4, drop_last=True)) == 0
    assert list(TensorLoader(columns(3), batch_size=4, drop_last=True)) == []


def test_loader_order_is_a_function_of_seed_and_epoch():
    data = columns(100)
    a = TensorLoader(data, batch_size=10, shuffle=True, seed=3)
    b = TensorLoader(data, batch_size=10, shuffle=True, seed=3)
    assert labels(a.iterate(5)) == labels(b.iterate(5))  # same (seed, epoch): same order
    assert labels(a.iterate(5)) != labels(a.iterate(6))  # another epoch: another order
    assert labels(a.iterate(5)) != list(range(100))      # shuffled at all
    other_seed = TensorLoader(data, batch_size=10, shuffle=True, seed=4)
    assert labels(other_seed.iterate(5)) != labels(a.iterate(5))
    a.set_epoch(6)
    assert labels(a) == labels(b.iterate(6))  # iteration uses the epoch set_epoch chose
    assert labels(a) == labels(a)              # and repeats it


@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_iterate_from_start_yields_the_tail(shuffle):
    loader = TensorLoader(columns(23), batch_size=5, shuffle=shuffle, seed=1)
    full = list(loader.iterate(2))
    for start in (0, 1, 3, 4, 5):
        tail = list(loader.iterate(2, start=start))
        assert len(tail) == len(full) - start
        for (X1, y1), (X2, y2) in zip(tail, full[start:]):
            assert torch.equal(X1, X2) and torch.equal(y1, y2)


def test_loader_transform_is_applied_per_batch():
    calls = []

    def transform(batch):
        calls.append(len(batch[-1]))
        X, y = batch
        return X * 2, y + 100

    loader = TensorLoader(columns(10), batch_size=4, transform=transform)
    batches = list(loader)
    assert calls == [4, 4, 2]  # once per batch, never per example
    assert labels(batches) == list(range(100, 110))
    assert torch.equal(batches[0][0][:, 0], torch.tensor([0.0, 2, 4, 6]))


@pytest.mark.parametrize("n, world_size", [(10, 3), (10, 4), (12, 4), (7, 2), (5, 5)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_shard_with_padding(n, world_size, shuffle):
    loader = TensorLoader(columns(n), batch_size=2, shuffle=shuffle, seed=7)
    shards = [labels(loader.shard(rank, world_size, pad=True).iterate(1)) for rank in range(world_size)]
    per_rank = -(-n // world_size)
    assert all(len(s) == per_rank for s in shards)  # equal shares: DDP ranks step in lockstep
    assert len({len(loader.shard(r, world_size)) for r in range(world_size)}) == 1
    everything = [v for s in shards for v in s]
    assert set(everything) == set(range(n))  # the union covers every example
    assert len(everything) - n == per_rank * world_size - n  # only the padding repeats
    for rank in range(world_size):
        assert_aligned(loader.shard(rank, world_size).iterate(1))


@pytest.mark.parametrize("n, world_size", [(10, 3), (10, 4), (12, 4), (3, 5)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_shard_without_padding_is_a_partition(n, world_size, shuffle):
    loader = TensorLoader(columns(n), batch_size=2, shuffle=shuffle, seed=7)
    shards = [loader.shard(rank, world_size, pad=False) for rank in range(world_size)]
    everything = [v for s in shards for v in labels(s.iterate(1))]
    assert sorted(everything) == list(range(n))  # disjoint, each example exactly once
    assert sum(s.num_examples for s in shards) == n


def test_loader_shard_padding_when_world_size_exceeds_the_dataset():
    loader = TensorLoader(columns(3), batch_size=2)
    for rank in range(8):
        shard = loader.shard(rank, 8, pad=True)
        assert len(shard) == 1
        assert [len(y) for _, y in shard] == [1], f"rank {rank}"


def test_loader_shards_agree_on_one_permutation():
    loader = TensorLoader(columns(12), batch_size=3, shuffle=True, seed=2)
    order = labels(loader.iterate(4))
    for rank in range(3):
        assert labels(loader.shard(rank, 3).iterate(4)) == order[rank::3]


def test_loader_len():
    assert len(TensorLoader(columns(10), batch_size=4)) == 3
    assert len(TensorLoader(columns(10), batch_size=5)) == 2
    assert len(TensorLoader(columns(10), batch_size=20)) == 1
    assert len(TensorLoader(columns(10), batch_size=4, drop_last=True)) == 2
    assert len(TensorLoader(columns(10), batch_size=2).shard(0, 3)) == 2  # 4 examples (padded)
    assert len(TensorLoader(columns(10), batch_size=2).shard(2, 3, pad=False)) == 2  # 3 examples
    loader = TensorLoader(columns(10), batch_size=3, shuffle=True)
    assert len(loader) == len(list(loader))


def test_loader_rejects_bad_arguments():
    X, y = columns(10)
    with pytest.raises(ValueError, match="equal length"):
        TensorLoader((X, y[:9]), batch_size=2)
    with pytest.raises(ValueError, match="equal length"):
        TensorLoader((), batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        TensorLoader((X, y), batch_size=0)
    with pytest.raises(ValueError, match="rank 3 out of range"):
        TensorLoader((X, y), batch_size=2).shard(3, 3)


def test_loader_replace_and_shard_return_new_loaders():
    loader = TensorLoader(columns(10), batch_size=4)
    bigger = loader.replace(batch_size=5)
    shard = loader.shard(1, 2)
    assert (loader.batch_size, bigger.batch_size) == (4, 5)
    assert (loader.rank, loader.world_size, shard.rank, shard.world_size) == (0, 1, 1, 2)
    with pytest.raises(AttributeError):
        loader.replace(no_such_setting=1)


# --- DataModule ------------------------------------------------------------------------------------------------------

class Toy(DataModule):
    def __init__(self, n: int = 10, batch_size: int = 4, scale: float = 1.0) -> None:
        self.save_hyperparameters()
        self.loads = 0

    def load(self):
        self.loads += 1
        X, y = columns(self.n)
        return {"train": (X, y), "val": (X + 1000, y + 1000)}


class ScaledToy(Toy):
    def batch_transform(self, batch):
        X, y = batch
        return X * self.scale, y


def test_data_module_loaders_and_example_batch():
    data = Toy(n=10, batch_size=4)
    assert data.hparams == {"n": 10, "batch_size": 4, "scale": 1.0}
    X, y = data.example_batch()
    assert y.tolist() == [1000, 1001, 1002, 1003]  # the first validation batch, in order
    assert X.shape == (4, 2)
    X7, y7 = data.example_batch(7)
    assert y7.tolist() == list(range(1000, 1007))
    assert torch.equal(data.example_batch()[0], X)  # a fixed batch
    val, train = data.val_dataloader(), data.train_dataloader()
    assert labels(val) == list(range(1000, 1010))
    assert (train.shuffle, val.shuffle) == (True, False)
    assert sorted(labels(train)) == list(range(10))
    assert data.loads == 1  # loaded once, then cached


def test_data_module_batch_transform_reaches_loaders_and_example_batch():
    data = ScaledToy(batch_size=4, scale=0.5)
    X, _ = data.example_batch()
    assert X[:, 0].tolist() == [500.0, 500.5, 501.0, 501.5]
    assert torch.equal(next(iter(data.val_dataloader()))[0], X)
    assert Toy().val_dataloader().transform is None  # the identity is not called per batch


# --- data folders and files --------------------------------------------------------------------------------------------

@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No $ZOO_DATA, no $ZOO_OFFLINE, and a HOME (thus ~/.cache/zoo/data) inside tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ZOO_DATA", raising=False)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    return home


def test_data_dirs_order(clean_env, monkeypatch, tmp_path):
    cache = clean_env / ".cache" / "zoo" / "data"
    assert data_dirs() == [cache]
    assert data_dirs(tmp_path / "mine") == [tmp_path / "mine", cache]
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "env"))
    assert data_dirs() == [tmp_path / "env", cache]
    assert data_dirs(str(tmp_path / "mine")) == [tmp_path / "mine", tmp_path / "env", cache]
    assert data_dirs(tmp_path / "env") == [tmp_path / "env", cache]  # no folder twice
    assert data_dirs("~/data") == [clean_env / "data", tmp_path / "env", cache]  # ~ expanded
    monkeypatch.setenv("ZOO_DATA", "")
    assert data_dirs() == [cache]  # set but empty: ignored


def write(root: Path, rel: str, content: bytes) -> DataFile:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return DataFile(rel, hashlib.sha1(content).hexdigest())


def test_find_data_files_with_correct_sha1(clean_env, tmp_path):
    root = tmp_path / "data"
    files = [write(root, "toy/raw/a.bin", b"alpha"), write(root, "toy/b.txt", b"beta"), DataFile("toy/c.txt")]
    (root / "toy/c.txt").write_text("no checksum recorded")
    assert find_data_files("toy", files, root, download=False) == root


def test_find_data_files_search_order(clean_env, monkeypatch, tmp_path):
    first, env = tmp_path / "first", tmp_path / "env"
    files = [write(first, "toy.txt", b"toy"), write(env, "toy.txt", b"toy")]
    monkeypatch.setenv("ZOO_DATA", str(env))
    assert find_data_files("toy", files[:1], first, download=False) == first
    assert find_data_files("toy", files[:1], tmp_path / "empty", download=False) == env
    assert find_data_files("toy", files[:1], download=False) == env
    cache = clean_env / ".cache" / "zoo" / "data"
    write(cache, "other.txt", b"other")
    assert find_data_files("other", [DataFile("other.txt")], first, download=False) == cache


def test_find_data_files_wrong_sha1(clean_env, tmp_path):
    root = tmp_path / "data"
    good = write(root, "toy/a.bin", b"alpha")
    write(root, "toy/b.bin", b"tampered")
    bad = DataFile("toy/b.bin", hashlib.sha1(b"original").hexdigest())
    with pytest.raises(IntegrityError) as info:
        find_data_files("toy", [good, bad], root, download=False)
    message = str(info.value)
    assert str(root / "toy/b.bin") in message and bad.sha1 in message and "\n" not in message


def test_find_data_files_rechecks_a_file_replaced_after_a_check(clean_env, tmp_path):
    root = tmp_path / "data"
    files = [write(root, "toy.bin", b"original")]
    assert find_data_files("toy", files, root, download=False) == root
    time.sleep(0.05)
    (root / "toy.bin").write_bytes(b"tampered")  # same size, new mtime: hashed again, not remembered
    with pytest.raises(IntegrityError):
        find_data_files("toy", files, root, download=False)


def test_find_data_files_rechecks_a_same_size_file_replaced_with_its_mtime_kept(clean_env, tmp_path):
    root = tmp_path / "data"
    files = [write(root, "toy.bin", b"original")]
    path = root / "toy.bin"
    assert find_data_files("toy", files, root, download=False) == root
    before = path.stat()
    time.sleep(0.05)
    path.write_bytes(b"tampered")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(IntegrityError):
        find_data_files("toy", files, root, download=False)


def test_find_data_files_offline_missing(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "env"))
    mine = tmp_path / "mine"
    present = write(mine, "toy/a.bin", b"alpha")
    calls = []
    with pytest.raises(DataNotFoundError) as info:
        find_data_files("toy", [present, DataFile("toy/missing.bin")], mine, download=calls.append)
    assert calls == []  # offline: no download attempted
    message = str(info.value)
    assert "\n" not in message
    assert "toy: missing toy/missing.bin" in message
    for folder in (mine, tmp_path / "env", clean_env / ".cache" / "zoo" / "data"):
        assert str(folder) in message
    assert "ZOO_OFFLINE=1" in message
    assert isinstance(info.value, FileNotFoundError)


def test_find_data_files_download_false(clean_env, tmp_path):
    with pytest.raises(DataNotFoundError, match=r"missing x\.bin \(and 1 more\); searched .*not downloaded"):
        find_data_files("toy", [DataFile("x.bin"), DataFile("y.bin")], tmp_path / "d", download=False)


def test_find_data_files_downloads_with_a_callable(clean_env, tmp_path):
    target = tmp_path / "mine"
    content = b"downloaded bytes"
    files = [DataFile("toy/raw/file.bin", hashlib.sha1(content).hexdigest())]
    calls = []

    def download(root: Path) -> None:
        calls.append(root)
        (root / "toy/raw").mkdir(parents=True)
        (root / "toy/raw/file.bin").write_bytes(content)

    assert find_data_files("toy", files, target, download=download) == target
    assert calls == [target]  # into the first data folder
    assert (target / "toy/raw/file.bin").read_bytes() == content
    assert find_data_files("toy", files, target, download=download) == target
    assert calls == [target]  # found the second time: no download


def test_find_data_files_download_problems(clean_env, tmp_path):
    files = [DataFile("file.bin", hashlib.sha1(b"right").hexdigest())]

    def wrong(root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "file.bin").write_bytes(b"wrong")

    with pytest.raises(IntegrityError, match="file.bin has SHA-1"):
        find_data_files("toy", files, tmp_path / "a", download=wrong)

    def failing(root: Path) -> None:
        raise OSError("network is\nunreachable")

    with pytest.raises(DataNotFoundError) as info:
        find_data_files("toy", files, tmp_path / "b", download=failing)
    assert "download failed: network is unreachable" in str(info.value) and "\n" not in str(info.value)

    with pytest.raises(DataNotFoundError, match="the download did not produce them"):
        find_data_files("toy", files, tmp_path / "c", download=lambda root: None)

    def archive_missing(root: Path) -> None:  # a downloader that looks for its archive first (fra-eng's zip)
        find_data_files("toy", [DataFile("toy.zip", "0" * 40)], root, download=failing)

    with pytest.raises(DataNotFoundError) as info:
        find_data_files("toy", files, tmp_path / "d", download=archive_missing)
    message = str(info.value)
    assert "missing toy.zip" in message and message.count("Put the files") == 1 and message.count("searched") == 1


# --- the book's synthetic datasets -----------------------------------------------------------------------------------

def test_synthetic_regression_book_defaults():
    data = SyntheticRegression()
    assert data.hparams == {"w": (2.0, -3.4), "b": 4.2, "noise": 0.01, "num_train": 1000, "num_val": 1000,
                            "batch_size": 32, "seed": 0}
    splits = data.splits()
    (X, y), (Xv, yv) = splits["train"], splits["val"]
    assert X.shape == (1000, 2) and y.shape == (1000, 1) and Xv.shape == (1000, 2) and yv.shape == (1000, 1)
    assert X.dtype == y.dtype == torch.float32
    for features, target in ((X, y), (Xv, yv)):
        residual = target - (features @ torch.tensor([[2.0], [-3.4]]) + 4.2)
        assert residual.abs().max() < 0.06  # noise N(0, 0.01^2): 6 sigma
        assert 0.008 < residual.std() < 0.012
    assert abs(X.mean()) < 0.1 and 0.9 < X.std() < 1.1  # X ~ N(0, 1)
    assert not torch.equal(X[:10], Xv[:10])  # two splits, not one twice
    assert len(data.train_dataloader()) == 32 and len(data.val_dataloader()) == 32


def test_synthetic_regression_is_deterministic_by_seed():
    a, b, c = SyntheticRegression(seed=0).load(), SyntheticRegression(seed=0).load(), SyntheticRegression(seed=1).load()
    for split in ("train", "val"):
        assert all(torch.equal(u, v) for u, v in zip(a[split], b[split]))
        assert not torch.equal(a[split][0], c[split][0])


def test_synthetic_regression_parameters():
    data = SyntheticRegression(w=[1.0, 2.0, 3.0], b=-1.0, noise=0.0, num_train=8, num_val=4, batch_size=3)
    X, y = data.splits()["train"]
    assert X.shape == (8, 3) and data.splits()["val"][0].shape == (4, 3)
    assert torch.allclose(y, X @ torch.tensor([[1.0], [2.0], [3.0]]) - 1.0, atol=1e-5)
    assert [len(b[1]) for b in data.val_dataloader()] == [3, 1]


def test_weight_decay_data_book_defaults():
    data = WeightDecayData()
    assert data.hparams == {"num_train": 20, "num_val": 100, "num_inputs": 200, "batch_size": 5, "seed": 0}
    (X, y), (Xv, yv) = data.splits()["train"], data.splits()["val"]
    assert X.shape == (20, 200) and y.shape == (20, 1) and Xv.shape == (100, 200) and yv.shape == (100, 1)
    residual = torch.cat([y, yv]) - (0.05 + 0.01 * torch.cat([X, Xv]).sum(dim=1, keepdim=True))
    assert residual.abs().max() < 0.06 and 0.005 < residual.std() < 0.015
    assert len(data.train_dataloader()) == 4
    assert torch.equal(WeightDecayData().load()["train"][0], X)
    assert not torch.equal(WeightDecayData(seed=1).load()["train"][0], X)


# --- Fashion-MNIST --------------------------------------------------------------------------------------------------

def test_fashion_mnist_synthetic_shapes_dtypes_range():
    data = FashionMNIST(synthetic=True, num_train=64, num_val=32, batch_size=16)
    assert "data_dir" not in data.hparams
    splits = data.splits()
    for split, n in (("train", 64), ("val", 32)):
        X, y = splits[split]
        assert X.shape == (n, 1, 28, 28) and X.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert X.min() >= 0 and X.max() <= 1
        assert y.min() >= 0 and y.max() <= 9
    X, y = data.example_batch()
    assert X.shape == (16, 1, 28, 28) and y.shape == (16,)
    default = FashionMNIST(synthetic=True).splits()
    assert len(default["train"][0]) == 256 and len(default["val"][0]) == 64


def test_fashion_mnist_synthetic_is_deterministic_and_learnable():
    a = FashionMNIST(synthetic=True, num_train=64, seed=0).load()["train"]
    b = FashionMNIST(synthetic=True, num_train=64, seed=0).load()["train"]
    c = FashionMNIST(synthetic=True, num_train=64, seed=1).load()["train"]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    X, y = a  # one template per class: images of a class are closer to each other than to other classes
    same = [(X[i] - X[j]).norm() for i in range(20) for j in range(i) if y[i] == y[j]]
    other = [(X[i] - X[j]).norm() for i in range(20) for j in range(i) if y[i] != y[j]]
    assert max(same) < min(other)


@pytest.mark.parametrize("resize, size", [(32, (32, 32)), (96, (96, 96)), ([20, 24], (20, 24)), (28, (28, 28)),
                                          (None, (28, 28))])
def test_fashion_mnist_resize_per_batch(resize, size):
    data = FashionMNIST(synthetic=True, num_train=20, num_val=10, batch_size=8, resize=resize)
    stored = data.splits()["train"][0]
    assert stored.shape[-2:] == (28, 28)  # stored once at 28x28; resized batch by batch
    batches = list(data.train_dataloader())
    assert [tuple(X.shape) for X, _ in batches] == [(8, 1, *size), (8, 1, *size), (4, 1, *size)]
    assert all(X.dtype == torch.float32 and y.dtype == torch.int64 for X, y in batches)
    X, y = data.example_batch(3)
    assert X.shape == (3, 1, *size) and y.tolist() == data.splits()["val"][1][:3].tolist()
    assert X.min() >= 0 and X.max() <= 1  # bilinear interpolation stays within the range


def test_fashion_mnist_resize_of_28_is_the_identity():
    data = FashionMNIST(synthetic=True, num_val=10, batch_size=10, resize=28)
    assert torch.equal(data.example_batch()[0], data.splits()["val"][0])


@pytest.fixture(scope="module")
def real_fashion_mnist():
    require_data("fashion-mnist")
    return FashionMNIST(batch_size=256).splits()


@pytest.mark.data
def test_fashion_mnist_real(real_fashion_mnist):
    for split, n in (("train", 60000), ("val", 10000)):
        X, y = real_fashion_mnist[split]
        assert X.shape == (n, 1, 28, 28) and X.dtype == torch.float32
        assert X.min() == 0 and X.max() == 1  # pixels / 255, no normalisation
        assert torch.equal(X * 255, (X * 255).round())
        assert y.shape == (n,) and y.dtype == torch.int64
        assert sorted(y.unique().tolist()) == list(range(10))
        assert torch.bincount(y).tolist() == [n // 10] * 10  # balanced classes


@pytest.mark.data
def test_fashion_mnist_real_limits_and_batches():
    require_data("fashion-mnist")
    data = FashionMNIST(batch_size=256, num_train=1000, num_val=300, resize=32)
    X, y = data.splits()["train"]
    assert X.shape == (1000, 1, 28, 28) and len(data.splits()["val"][0]) == 300
    batch = next(iter(data.train_dataloader()))
    assert batch[0].shape == (256, 1, 32, 32) and batch[1].shape == (256,)


@pytest.mark.data
def test_fashion_mnist_corrupt_file_raises_integrity_error(tmp_path, monkeypatch):
    root = require_data("fashion-mnist")
    copy = tmp_path / "data"
    raw = copy / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for source in (root / "FashionMNIST" / "raw").iterdir():
        shutil.copyfile(source, raw / source.name)  # contents only: the originals are read-only
    assert FashionMNIST.locate(copy, download=False) == copy  # the intact copy is accepted
    labels_file = raw / "t10k-labels-idx1-ubyte"
    content = bytearray(labels_file.read_bytes())
    content[5000] ^= 0x01  # one label changed by one bit
    labels_file.write_bytes(bytes(content))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(IntegrityError) as info:
        FashionMNIST(data_dir=str(copy)).load()
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message and "\n" not in message


def test_find_data_files_downloads_from_a_url_and_checks_it(clean_env, tmp_path, monkeypatch):
    """The URL path end to end (urllib reads file:// URLs too): fetched into the first data folder, then checked."""
    source = tmp_path / "server" / "timemachine.txt"
    source.parent.mkdir()
    source.write_text("The Time Traveller (for so it will be convenient to speak of him)")
    sha1 = hashlib.sha1(source.read_bytes()).hexdigest()
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    target = tmp_path / "data"
    root = find_data_files("time-machine", [DataFile("timemachine.txt", sha1, source.as_uri())], data_dir=target)
    assert root == target and (target / "timemachine.txt").read_bytes() == source.read_bytes()
    assert not [p for p in target.iterdir() if p.name.startswith(".")]  # no partial download left behind

    source.write_text("a different book")
    with pytest.raises(IntegrityError, match="the download of .* has SHA-1 .* it was not kept"):
        find_data_files("time-machine", [DataFile("other.txt", sha1, source.as_uri())], data_dir=tmp_path / "d2")
    assert not list((tmp_path / "d2").iterdir())  # nothing kept, so the next run downloads again


def test_data_streams_are_independent_of_the_training_seed():
    """Regression: data generated with seed 0 once replayed torch.manual_seed(0)'s stream, so a linear model's initial
    weights were a scaled copy of the first training example."""
    from zoo_core.data import seeded_generator

    torch.manual_seed(0)
    init = torch.randn(1000)
    for purpose in (("linear-data",), ("shuffle", 0), ("fashion-mnist-synthetic",)):
        data = torch.randn(1000, generator=seeded_generator(0, *purpose))
        assert abs(torch.corrcoef(torch.stack([init, data]))[0, 1]) < 0.1
    first = torch.randn(5, generator=seeded_generator(0, "linear-data"))
    assert torch.equal(first, torch.randn(5, generator=seeded_generator(0, "linear-data")))  # still reproducible
    torch.manual_seed(0)
    model_w = torch.normal(0, 0.01, (2,))
    X = SyntheticRegression(num_train=1, num_val=1).load()["train"][0]
    assert not torch.allclose(model_w * 100, X[0])
