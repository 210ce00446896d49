"""Devices (d2l §6.7): try_gpu / try_all_gpus fall back to the CPU; to_device moves nested batches."""

from __future__ import annotations

import torch

from zoo_builders import to_device, try_all_gpus, try_gpu


def test_fall_back_to_the_cpu_without_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert try_gpu() == torch.device("cpu") and try_gpu(3) == torch.device("cpu")
    assert try_all_gpus() == [torch.device("cpu")]


def test_pick_the_gpus_that_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert try_gpu() == torch.device("cuda:0") and try_gpu(1) == torch.device("cuda:1")
    assert try_gpu(2) == torch.device("cpu")  # the book's try_gpu(10): no such GPU
    assert try_all_gpus() == [torch.device("cuda:0"), torch.device("cuda:1")]


def test_to_device_moves_every_tensor_and_keeps_the_structure():
    batch = {"x": torch.ones(2), "pair": (torch.zeros(1, dtype=torch.int64), 3), "list": [torch.ones(1)]}
    moved = to_device(batch, "meta")  # a device other than the CPU, present everywhere
    assert moved["x"].device.type == "meta" and moved["list"][0].device.type == "meta"
    assert isinstance(moved["pair"], tuple) and moved["pair"][0].device.type == "meta" and moved["pair"][1] == 3
    assert batch["x"].device.type == "cpu"


def test_on_this_machine():
    """Whatever the machine: try_gpu gives a device tensors can be created on."""
    x = torch.ones(2, device=try_gpu())
    assert x.device.type in ("cpu", "cuda") and len(try_all_gpus()) == max(1, torch.cuda.device_count())
