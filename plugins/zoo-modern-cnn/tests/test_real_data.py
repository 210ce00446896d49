"""On real Fashion-MNIST (skipped where it is absent; slow: about a minute on a laptop CPU)."""

from __future__ import annotations

import pytest
import torch

from zoo_core import Trainer, get_data, get_model
from zoo_core.testing import require_data


@pytest.mark.data
@pytest.mark.slow
def test_scratch_and_concise_bn_lenet_learn_alike():
    """One epoch of the book's recipe (lr 0.1, batch 128): both reach 75% validation accuracy, and from the same
    initial weights the from-scratch batch norm trains exactly like PyTorch's (same metrics to float tolerance)."""
    require_data("fashion-mnist")
    results = {}
    for name in ("bn-lenet-scratch", "bn-lenet"):
        torch.manual_seed(0)
        model, data = get_model(name, preset="book"), get_data(name, preset="book")
        result = Trainer(max_epochs=1, device="cpu", progress=False, log=lambda line: None).fit(model, data)
        assert result.metrics["val_acc"] >= 0.75, (name, result.metrics)
        results[name] = result.metrics
    for key, value in results["bn-lenet"].items():
        assert results["bn-lenet-scratch"][key] == pytest.approx(value, rel=1e-3, abs=1e-3), key
