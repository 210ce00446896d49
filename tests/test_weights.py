"""Weights in safetensors (`zoo_core.weights`): round trips, tied weights, metadata, one-line errors, no pickle."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch
from safetensors import safe_open
from torch import nn

from zoo_core import IntegrityError
from zoo_core.weights import load_weights, read_metadata, save_weights


class Small(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        self.norm = nn.BatchNorm1d(3)  # buffers too: running statistics and the batch counter

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.norm(self.body(X))


class Bigger(Small):
    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Linear(3, 1)


def tied() -> nn.Sequential:
    """The book's tied layer (d2l 6.2.3): one `nn.Linear` used twice."""
    shared = nn.Linear(4, 4)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), shared, nn.ReLU(), shared, nn.Linear(4, 1))


def trained_small() -> Small:
    torch.manual_seed(0)
    model = Small()
    model.train()
    model(torch.randn(16, 4))  # move the batch-norm statistics off their defaults
    return model.eval()


def test_round_trip(tmp_path):
    model = trained_small()
    path = save_weights(model, tmp_path / "model.safetensors")
    assert path == tmp_path / "model.safetensors" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary left
    torch.manual_seed(1)
    other = Small().eval()
    X = torch.randn(5, 4)
    assert not torch.allclose(model(X), other(X))
    assert load_weights(other, path) == ([], [])
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2) and v1.dtype == v2.dtype
    assert other.norm.num_batches_tracked.item() == 1
    assert torch.equal(model(X), other(X))


def test_tied_weights_survive_and_stay_tied(tmp_path):
    torch.manual_seed(0)
    model = tied()
    assert model[2] is model[4]
    save_weights(model, tmp_path / "tied.safetensors")
    with safe_open(str(tmp_path / "tied.safetensors"), framework="pt") as f:
        stored = set(f.keys())
    assert len(stored) == 6 and len({"2.weight", "4.weight"} & stored) == 1  # one copy of the shared tensors

    torch.manual_seed(1)
    fresh = tied()
    assert load_weights(fresh, tmp_path / "tied.safetensors") == ([], [])
    assert fresh[2].weight is fresh[4].weight and fresh[2].bias is fresh[4].bias  # the same tensor objects
    state = fresh.state_dict()
    assert state["2.weight"].data_ptr() == state["4.weight"].data_ptr()
    assert torch.equal(fresh[2].weight, model[2].weight)
    assert len(list(fresh.parameters())) == 6
    assert sum(p.numel() for p in fresh.parameters()) == (3 * 4 + 4) + (4 * 4 + 4) + (4 + 1)  # counted once
    X = torch.randn(7, 3)
    assert torch.equal(fresh(X), model(X))
    with torch.no_grad():
        fresh[2].weight.add_(1.0)
    assert torch.equal(fresh[4].weight, fresh[2].weight)  # still tied after load


def test_tied_weight_gradient_is_the_sum_of_both_uses(tmp_path):
    torch.manual_seed(0)
    model = tied()
    save_weights(model, tmp_path / "tied.safetensors")
    fresh = tied()
    load_weights(fresh, tmp_path / "tied.safetensors")
    X = torch.randn(5, 3)
    fresh(X).sum().backward()

    # the same network with the shared layer as two independent copies
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    for copy in (first, second):
        copy.load_state_dict(fresh[2].state_dict())
    untied = nn.Sequential(fresh[0], nn.ReLU(), first, nn.ReLU(), second, fresh[5])
    untied.zero_grad()
    untied(X).sum().backward()
    assert torch.allclose(fresh[2].weight.grad, first.weight.grad + second.weight.grad)
    assert torch.allclose(fresh[2].bias.grad, first.bias.grad + second.bias.grad)
    assert not torch.allclose(fresh[2].weight.grad, first.weight.grad)


def test_metadata_round_trip(tmp_path):
    path = tmp_path / "model.safetensors"
    hparams = {"lr": 0.1, "sizes": [1, 2], "name": "x"}
    save_weights(trained_small(), path, metadata={"model": "softmax", "zoo_core": "0.1.0", "hparams": hparams,
                                                  "epochs": 3, "flag": True, "nothing": None})
    meta = read_metadata(path)
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["model"] == "softmax" and meta["zoo_core"] == "0.1.0"  # strings stay as they are
    assert json.loads(meta["hparams"]) == hparams
    assert (meta["epochs"], meta["flag"], meta["nothing"]) == ("3", "true", "null")
    save_weights(trained_small(), tmp_path / "bare.safetensors")
    assert read_metadata(tmp_path / "bare.safetensors") == {}


def test_load_reports_missing_and_unexpected_keys(tmp_path):
    small, bigger = trained_small(), Bigger()
    save_weights(small, tmp_path / "small.safetensors")
    save_weights(bigger, tmp_path / "bigger.safetensors")

    with pytest.raises(IntegrityError) as info:
        load_weights(Bigger(), tmp_path / "small.safetensors")
    message = str(info.value)
    assert "missing keys extra.bias, extra.weight" in message and "Bigger" in message and "\n" not in message
    assert "small.safetensors" in message

    with pytest.raises(IntegrityError) as info:
        load_weights(Small(), tmp_path / "bigger.safetensors")
    assert "unexpected keys extra.bias, extra.weight" in str(info.value)

    target = Bigger()
    assert load_weights(target, tmp_path / "small.safetensors", strict=False) == (["extra.bias", "extra.weight"], [])
    assert torch.equal(target.body[0].weight, small.body[0].weight)  # what fits is loaded
    assert load_weights(Small(), tmp_path / "bigger.safetensors", strict=False) == ([], ["extra.bias", "extra.weight"])


def test_load_shape_mismatch(tmp_path):
    save_weights(Small(hidden=8), tmp_path / "model.safetensors")
    with pytest.raises(IntegrityError) as info:
        load_weights(Small(hidden=16), tmp_path / "model.safetensors")
    message = str(info.value)
    assert "does not fit Small" in message and "body.0.weight" in message and "\n" not in message


@pytest.mark.parametrize("damage", ["truncated", "garbage", "tiny", "empty", "bad-header"])
def test_load_corrupt_file_is_one_line_integrity_error(tmp_path, damage):
    path = tmp_path / "model.safetensors"
    save_weights(trained_small(), path)
    data = path.read_bytes()
    damaged = {
        "truncated": data[: len(data) - 40],
        "garbage": bytes(range(256)) * 8,
        "tiny": b"abc",
        "empty": b"",
        "bad-header": struct.pack("<Q", 20) + b"{not json at all!!!}" + data[28:],
    }[damage]
    path.write_bytes(damaged)
    for call in (lambda: load_weights(Small(), path), lambda: read_metadata(path)):
        with pytest.raises(IntegrityError) as info:
            call()
        message = str(info.value)
        assert str(path) in message and "\n" not in message


def test_load_missing_file(tmp_path):
    with pytest.raises(IntegrityError, match="does not exist"):
        load_weights(Small(), tmp_path / "nope.safetensors")
    with pytest.raises(IntegrityError):
        read_metadata(tmp_path / "nope.safetensors")


def test_weights_never_use_pickle(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "dump"), (pickle, "dumps"),
                         (torch, "load"), (torch, "save")):
        monkeypatch.setattr(module, name, forbidden)
    model = trained_small()
    save_weights(model, path, metadata={"hparams": {"lr": 0.1}})
    other = Small()
    load_weights(other, path)
    read_metadata(path)
    assert torch.equal(other.body[0].weight, model.body[0].weight)

    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])  # safetensors: u64 little-endian header length, JSON header
    assert data[8:9] == b"{"
    header = json.loads(data[8 : 8 + header_length])
    assert header["__metadata__"]["hparams"] == '{"lr": 0.1}'
    assert set(header) - {"__metadata__"} == set(model.state_dict())
    assert b"\x80\x02" not in data[:2] and not data.startswith(b"PK")  # neither a pickle nor torch's zip
