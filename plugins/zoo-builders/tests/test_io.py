"""File I/O (d2l §6.6): tensors, lists and dicts in safetensors; one sub-block of a saved model into another net."""

from __future__ import annotations

import json
import struct

import pytest
import safetensors.torch
import torch
from torch import nn

from zoo_builders import NestMLP, load_submodule, load_tensors, save_tensors
from zoo_core import IntegrityError, save_weights


def _header(path) -> dict:
    """The JSON header of a safetensors file: the format is an 8-byte length then JSON (no pickle anywhere)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def test_tensor_list_and_dict_round_trip_with_their_type(tmp_path):
    x = torch.arange(4.0)
    save_tensors(tmp_path / "x.safetensors", x)
    back = load_tensors(tmp_path / "x.safetensors")
    assert type(back) is torch.Tensor and torch.equal(back, x)

    y = torch.zeros(4, dtype=torch.int64)
    items = [x, y, x.reshape(2, 2)]  # the last one shares x's memory
    save_tensors(tmp_path / "xy.safetensors", items)
    back = load_tensors(tmp_path / "xy.safetensors")
    assert type(back) is list and len(back) == 3
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(back, items))

    mydict = {"x": x, "y": y}
    save_tensors(tmp_path / "mydict.safetensors", mydict)
    back = load_tensors(tmp_path / "mydict.safetensors")
    assert type(back) is dict and list(back) == ["x", "y"] and torch.equal(back["y"], y)
    assert _header(tmp_path / "mydict.safetensors")["__metadata__"] == {"zoo_builders.kind": "dict"}
    assert list(tmp_path.glob(".*tmp*")) == []  # the temporary file was renamed into place


def test_save_tensors_rejects_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="'b' is a int"):
        save_tensors(tmp_path / "bad.safetensors", {"a": torch.ones(1), "b": 3})
    with pytest.raises(TypeError, match="keys must be strings"):
        save_tensors(tmp_path / "bad.safetensors", {1: torch.ones(1)})
    with pytest.raises(TypeError, match="tensor, a list or a dict"):
        save_tensors(tmp_path / "bad.safetensors", 3.0)
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04not safetensors")  # a pickle's first bytes
    with pytest.raises(IntegrityError, match="not a readable safetensors file"):
        load_tensors(tmp_path / "junk.safetensors")


class _Big(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = NestMLP()
        self.head = nn.Linear(16, 3)

    def forward(self, X):
        return self.head(self.encoder(X))


class _Other(nn.Module):
    """A different architecture reusing the encoder under another name."""

    def __init__(self) -> None:
        super().__init__()
        self.features = NestMLP()
        self.out = nn.Linear(16, 7)


def _big() -> _Big:
    big = _Big()
    big(torch.rand(1, 20))  # lazy layers get their shapes
    return big


def test_load_submodule_loads_one_block_only(tmp_path):
    torch.manual_seed(0)
    big = _big()
    save_weights(big, tmp_path / "big.safetensors")
    # same name in both networks
    other = _big()
    head_before = other.head.weight.clone()
    missing, unexpected = load_submodule(other, "encoder", tmp_path / "big.safetensors")
    assert (missing, unexpected) == ([], [])
    assert all(torch.equal(a, b) for a, b in zip(other.encoder.state_dict().values(),
                                                  big.encoder.state_dict().values()))
    assert torch.equal(other.head.weight, head_before) and not torch.equal(other.head.weight, big.head.weight)
    # another architecture, another name for the block
    new = _Other()
    new.features(torch.rand(1, 20))
    load_submodule(new, "encoder", tmp_path / "big.safetensors", into="features")
    X = torch.rand(2, 20)
    assert torch.equal(new.features(X), big.encoder(X))
    # a single layer of the saved model, into a bare layer
    layer = nn.Linear(64, 32)
    load_submodule(layer, "encoder.net.2", tmp_path / "big.safetensors", into="")
    assert torch.equal(layer.weight, big.encoder.net[2].weight)


def test_load_submodule_reports_keys_by_name(tmp_path):
    torch.manual_seed(0)
    big = _big()
    safetensors.torch.save_model(big, str(tmp_path / "big.safetensors"))
    wider = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5))
    with pytest.raises(IntegrityError) as info:  # the saved block has no layer 4
        load_submodule(wider, "encoder.net", tmp_path / "big.safetensors", into="")
    assert "missing keys encoder.net.4.bias, encoder.net.4.weight" in str(info.value)
    missing, unexpected = load_submodule(wider, "encoder.net", tmp_path / "big.safetensors", into="", strict=False)
    assert missing == ["encoder.net.4.bias", "encoder.net.4.weight"] and unexpected == []
    assert torch.equal(wider[2].weight, big.encoder.net[2].weight)  # what fits was loaded

    narrow = nn.Sequential(nn.Linear(20, 64))
    with pytest.raises(IntegrityError, match="unexpected keys encoder.net.2.bias, encoder.net.2.weight"):
        load_submodule(narrow, "encoder.net", tmp_path / "big.safetensors", into="")
    with pytest.raises(IntegrityError, match=r"encoder.net.0.weight is \(64, 20\) in the file, \(64, 10\)"):
        load_submodule(nn.Sequential(nn.Linear(10, 64)), "encoder.net", tmp_path / "big.safetensors", into="",
                       strict=False)
    with pytest.raises(IntegrityError, match="no tensors under 'decoder'.*encoder, head"):
        load_submodule(big, "decoder", tmp_path / "big.safetensors", into="head")


def test_load_submodule_follows_tied_weights_stored_once(tmp_path):
    from zoo_core import get_model

    model = get_model("tied-mlp", preset="tiny")
    save_weights(model, tmp_path / "tied.safetensors")
    # the second use of the shared layer (net.4) is stored under the first's name (net.2) only
    layer = nn.Linear(8, 8)
    load_submodule(layer, "net.4", tmp_path / "tied.safetensors", into="")
    assert torch.equal(layer.weight, model.net[4].weight)
