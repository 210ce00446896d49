"""`zoo_modern_rnn.recurrence`: nn.GRU's values and gradients, with backpropagation through time by hand."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo_modern_rnn.gru_train import input_bias
from zoo_modern_rnn.language_models import DeepRNNLM, GRULM
from zoo_modern_rnn.recurrence import GRURecurrence, gate_inputs, gru_forward

T, B, I, H = 7, 5, 6, 4


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    torch.manual_seed(0)


def randomised_gru(num_layers: int) -> nn.GRU:
    rnn = nn.GRU(I, H, num_layers)
    with torch.no_grad():
        for p in rnn.parameters():
            p.normal_(0, 0.5)  # b_hn far from zero: the reset gate's place shows
    return rnn


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_values_and_gradients_equal_nn_grus(num_layers):
    rnn = randomised_gru(num_layers)
    X = torch.randn(T, B, I, requires_grad=True)
    G = torch.randn(T, B, H)
    expected = rnn(X)[0]
    (expected * G).sum().backward()
    want = [p.grad.clone() for p in rnn.parameters()] + [X.grad.clone()]
    rnn.zero_grad()
    X.grad = None
    got = gru_forward(rnn, X)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    (got * G).sum().backward()
    for a, b in zip([p.grad for p in rnn.parameters()] + [X.grad], want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_token_indices_stand_for_one_hot_inputs():
    rnn = randomised_gru(2)
    tokens = torch.randint(0, I, (T, B))
    G = torch.randn(T, B, H)
    (rnn(F.one_hot(tokens, I).float())[0] * G).sum().backward()
    want = [p.grad.clone() for p in rnn.parameters()]
    rnn.zero_grad()
    got = gru_forward(rnn, tokens)
    torch.testing.assert_close(got, rnn(F.one_hot(tokens, I).float())[0], atol=1e-6, rtol=1e-5)
    (got * G).sum().backward()
    for a, b in zip((p.grad for p in rnn.parameters()), want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_initial_state_gradient():
    rnn = randomised_gru(1)
    X, H0 = torch.randn(T, B, I), torch.randn(B, H, requires_grad=True)
    G = torch.randn(T, B, H)
    (rnn(X, H0[None])[0] * G).sum().backward()
    want = H0.grad.clone()
    H0.grad = None
    XW = gate_inputs(X.reshape(T * B, I), rnn.weight_ih_l0, input_bias(rnn.bias_ih_l0, rnn.bias_hh_l0))
    (GRURecurrence.apply(XW.view(3, T, B, H), H0, rnn.weight_hh_l0, rnn.bias_hh_l0[2 * H:]) * G).sum().backward()
    torch.testing.assert_close(H0.grad, want, atol=1e-6, rtol=1e-5)


def test_refuses_what_it_does_not_compute():
    with pytest.raises(ValueError, match="unidirectional"):
        gru_forward(nn.GRU(I, H, bidirectional=True), torch.randn(T, B, I))


@pytest.mark.parametrize("cls", [GRULM, DeepRNNLM])
def test_language_models_train_on_it_with_nn_grus_gradients(cls, monkeypatch):
    """The concise GRU models' training forward (CPU, gradients on) goes through it, with the gradients nn.GRU gives;
    evaluation goes through nn.GRU itself."""
    import zoo_modern_rnn.language_models as lm

    model = cls(28, 8)
    X, Y = torch.randint(0, 28, (4, 9)), torch.randint(0, 28, (4, 9))
    calls = []
    monkeypatch.setattr(lm, "gru_forward", lambda *a, **k: calls.append(1) or gru_forward(*a, **k))

    def grads(hand: bool) -> list[torch.Tensor]:
        monkeypatch.setattr(cls, "hand_bptt", hand)
        model.zero_grad()
        model.loss(model(X), Y).backward()
        return [p.grad.clone() for p in model.parameters()]

    for a, b in zip(grads(True), grads(False)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert len(calls) == 1
    with torch.no_grad():
        model(X)
    assert len(calls) == 1
