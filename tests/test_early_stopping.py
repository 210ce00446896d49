"""Early stopping (d2l §5.5): stop after `patience` epochs without a better validation metric, keep the best."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from zoo_core import Model, Trainer, ZooError, load_weights
from zoo_core.data.synthetic import SyntheticRegression


class ScriptedValidation(Model):
    """A linear model whose validation loss follows a script, one value per epoch, so the best epoch is known."""

    def __init__(self, script: list[float], lr: float = 0.01):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(2, 1)
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    def forward(self, X):
        return self.net(X)

    def loss(self, y_hat, y):
        return ((y_hat - y) ** 2).mean()

    def validation_step(self, batch):
        return {"loss": torch.tensor(self.script, device=batch[0].device)[self.epoch]}

    def example_inputs(self, batch_size=2):
        return (torch.rand(batch_size, 2),)


def fit(script, patience, tmp_path=None, max_epochs=10):
    torch.manual_seed(0)
    model = ScriptedValidation(script)
    data = SyntheticRegression(num_train=64, num_val=16, batch_size=16)
    snapshots = []  # the weights at each epoch's validation
    original = Trainer.validate

    def validate(self, model, loader, autocast, reduce=None):
        out = original(self, model, loader, autocast, reduce)
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        model.epoch += 1
        return out

    trainer = Trainer(max_epochs=max_epochs, device="cpu", progress=False, log=lambda line: None,
                      early_stop_patience=patience, run_dir=tmp_path)
    trainer.validate = validate.__get__(trainer)
    return model, trainer.fit(model, data), snapshots


def test_stops_after_patience_epochs_without_improvement_and_restores_the_best_epoch(tmp_path):
    script = [5.0, 4.0, 3.0, 3.5, 3.0, 3.2, 1.0, 0.5]  # best at epoch 3; 3.0 again at epoch 5 is no improvement
    model, result, snapshots = fit(script, patience=3, tmp_path=tmp_path)
    assert result.epochs == 6 and result.stopped_early
    assert result.best_epoch == 3
    assert result.metrics["val_loss"] == 3.0
    best = snapshots[2]
    for name, tensor in model.state_dict().items():
        if name != "epoch":
            assert torch.equal(tensor, best[name]), name
    assert not torch.equal(model.net.weight, snapshots[-1]["net.weight"])  # training went on after epoch 3
    kept = json.loads((tmp_path / "best" / "best.json").read_text())
    assert kept["epoch"] == 3 and kept["monitor"] == "val_loss" and kept["value"] == 3.0
    other = ScriptedValidation(script)
    load_weights(other, tmp_path / "best" / "model.safetensors")
    assert torch.equal(other.net.weight, best["net.weight"])


def test_without_a_plateau_it_trains_every_epoch():
    script = [5.0, 4.0, 3.0, 2.0]
    _, result, _ = fit(script, patience=2, max_epochs=4)
    assert result.epochs == 4 and not result.stopped_early and result.best_epoch == 4


def test_classifiers_monitor_validation_accuracy_upwards():
    from zoo_core import Classifier

    assert Classifier.monitor == ("val_acc", "max")
    assert Model.monitor == ("val_loss", "min")


def test_resume_keeps_the_best_epoch(tmp_path):
    """Interrupting after epoch 4 and resuming stops where an uninterrupted run stops, with the same best."""
    script = [5.0, 4.0, 3.0, 3.5, 3.0, 3.2, 1.0]
    whole_model, whole, _ = fit(script, patience=3, tmp_path=tmp_path / "whole")
    fit(script, patience=3, tmp_path=tmp_path / "part", max_epochs=4)
    torch.manual_seed(0)
    model = ScriptedValidation(script)
    model.epoch.fill_(4)
    trainer = Trainer(max_epochs=10, device="cpu", progress=False, log=lambda line: None, early_stop_patience=3,
                      run_dir=tmp_path / "part")
    original = trainer.validate

    def validate(model, loader, autocast, reduce=None):
        out = original(model, loader, autocast, reduce)
        model.epoch += 1
        return out

    trainer.validate = validate
    result = trainer.fit(model, SyntheticRegression(num_train=64, num_val=16, batch_size=16),
                         ckpt_path=tmp_path / "part" / "checkpoint")
    assert (result.epochs, result.best_epoch, result.stopped_early) == (whole.epochs, 3, True)
    assert torch.equal(model.net.weight, whole_model.net.weight)
    assert result.metrics["val_loss"] == 3.0


def test_bad_patience_and_unreported_metric_are_errors():
    with pytest.raises(ZooError, match="early_stop_patience"):
        Trainer(early_stop_patience=0)

    class NoVal(ScriptedValidation):
        monitor = ("val_bleu", "max")

    model = NoVal([1.0])
    trainer = Trainer(max_epochs=1, device="cpu", progress=False, log=lambda line: None, early_stop_patience=1)
    with pytest.raises(ZooError, match="val_bleu"):
        trainer.fit(model, SyntheticRegression(num_train=16, num_val=16, batch_size=16))
