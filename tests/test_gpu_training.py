"""Training on CUDA as the zoo does it there: bf16 autocast, channels_last for conv nets, data resident on the GPU,
and torch.compile. Marked `gpu`: skipped (with the reason) where there is no CUDA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo_core import Classifier, Trainer
from zoo_core.data.fashion_mnist import FashionMNIST


class SmallConvNet(Classifier):
    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 10))

    def forward(self, X):
        return self.net(X)

    def example_inputs(self, batch_size=2):
        return (torch.rand(batch_size, 1, 28, 28),)


def data():
    return FashionMNIST(batch_size=64, synthetic=True, num_train=512, num_val=128, resize=32)


@pytest.mark.gpu
def test_cuda_training_uses_bf16_channels_last_and_device_resident_batches():
    torch.manual_seed(0)
    model = SmallConvNet()
    seen = []
    model.net[2].register_forward_pre_hook(lambda m, args: seen.append(
        (args[0].device.type, args[0].dtype, args[0].is_contiguous(memory_format=torch.channels_last))))
    result = Trainer(max_epochs=3, device="cuda", progress=False, log=lambda line: None).fit(model, data())
    assert result.precision == "bf16" and result.device.startswith("cuda")
    assert model.net[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(device == "cuda" and nhwc for device, _, nhwc in seen)
    assert any(dtype == torch.bfloat16 for _, dtype, _ in seen)  # autocast: the second conv gets bf16 activations
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


@pytest.mark.gpu
def test_cuda_compile_matches_eager_training():
    results = {}
    for compile in (False, True):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = SmallConvNet()
        results[compile] = Trainer(max_epochs=2, device="cuda", precision="32", compile=compile, progress=False,
                                   log=lambda line: None).fit(model, data())
    assert results[True].metrics["val_acc"] == pytest.approx(results[False].metrics["val_acc"], abs=0.03)
    assert results[True].metrics["val_loss"] == pytest.approx(results[False].metrics["val_loss"], rel=0.05)
