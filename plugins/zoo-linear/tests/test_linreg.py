"""Chapter 3 against the book: parameters recovered, weight decay shrinks w, the from-scratch pieces behave."""

from __future__ import annotations

import pytest
import torch

from zoo_core import Trainer, get_data, get_model, get_spec
from zoo_linear.linreg import SGD, l2_penalty

TRUE_W, TRUE_B = torch.tensor([2.0, -3.4]), 4.2


def train_book(name: str, **hparams):
    torch.manual_seed(0)
    model, data = get_model(name, preset="book", **hparams), get_data(name, preset="book")
    epochs = get_spec(name).preset("book").train["max_epochs"]
    Trainer(max_epochs=epochs, device="cpu", progress=False, log=lambda line: None).fit(model, data)
    return model


def test_concise_linreg_recovers_w_and_b():
    w, b = train_book("linreg").get_w_b()
    assert (w.flatten() - TRUE_W).abs().max() < 0.2 and abs(b.item() - TRUE_B) < 0.2


def test_scratch_linreg_recovers_w_and_approaches_b():
    """The scratch loss is (y_hat - y)^2 / 2, half the gradient of MSELoss, so with the book's lr 0.03 and 3 epochs
    b's error only shrinks to about 4.2 * 0.97^96 ~ 0.23. The book's own code (d2l 1.0.3) ends 0.205-0.239 away over
    seeds 0-4 on this machine, as its text shows (~0.21); the zoo keeps the book's recipe rather than tune it."""
    w, b = train_book("linreg-scratch").get_w_b()
    assert (w.flatten() - TRUE_W).abs().max() < 0.2
    assert 0.15 < TRUE_B - b.item() < 0.26  # approaching from below, as fast as the recipe allows


@pytest.mark.parametrize("name, key", [("weight-decay-scratch", "lambd"), ("weight-decay", "wd")])
def test_weight_decay_shrinks_the_weights_as_in_the_book(name, key):
    """The book prints l2_penalty(w) = ||w||^2 / 2 after training: 0.0099 without decay, 0.0017 with 3. Without
    decay w stays near its initial norm (20 examples constrain 20 of its 200 directions); with it, w shrinks."""
    plain = train_book(name, **{key: 0.0}).get_w_b()[0]
    decayed = train_book(name, **{key: 3.0}).get_w_b()[0]
    assert l2_penalty(plain).item() == pytest.approx(0.0099, rel=0.3)
    assert l2_penalty(decayed).item() == pytest.approx(0.0017, rel=0.3)
    assert decayed.norm() < 0.5 * plain.norm()


def test_concise_weight_decay_spares_the_bias():
    groups = get_model("weight-decay", preset="tiny", wd=3.0).configure_optimizers().param_groups
    assert [g["weight_decay"] for g in groups] == [3.0, 0]
    assert groups[0]["params"][0].dim() == 2 and groups[1]["params"][0].dim() == 1


def test_scratch_penalty_is_in_the_loss():
    model = get_model("weight-decay-scratch", preset="tiny", lambd=2.0)
    X, y = torch.randn(4, 8), torch.randn(4, 1)
    plain = ((model(X) - y) ** 2 / 2).mean()
    assert model.loss(model(X), y).item() == pytest.approx((plain + 2.0 * (model.w ** 2).sum() / 2).item())
    assert l2_penalty(torch.tensor([3.0, 4.0])).item() == 12.5


def test_scratch_sgd_steps_zeroes_and_saves():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    sgd = SGD([p], lr=0.1)
    (p ** 2).sum().backward()
    sgd.step()
    assert torch.allclose(p, torch.tensor([0.8, 1.6]))
    sgd.zero_grad(set_to_none=False)
    assert torch.equal(p.grad, torch.zeros(2))
    sgd.zero_grad()
    assert p.grad is None
    other = SGD([p], lr=1.0)
    other.load_state_dict(sgd.state_dict())
    assert other.lr == 0.1
