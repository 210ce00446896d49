"""The scratch LSTM, GRU and stacked RNN (d2l §10.1-10.3) against nn.LSTM / nn.GRU with the same weights."""

import pytest
import torch
from torch import nn

from zoo_modern_rnn.cells import (
    GRUScratch, LSTMScratch, StackedRNNScratch, load_from_torch, load_torch_weights, torch_weights,
)

NUM_STEPS, BATCH, NUM_INPUTS, NUM_HIDDENS = 7, 3, 5, 4


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    torch.manual_seed(0)


def randomise(module: nn.Module, scale: float = 0.5) -> None:
    """Every parameter random and far from zero (the book's init is too small to tell gate orders apart)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, scale)


def inputs(num_inputs: int = NUM_INPUTS) -> torch.Tensor:
    return torch.randn(NUM_STEPS, BATCH, num_inputs)  # time-major, as nn.GRU


def test_book_init_and_parameter_names():
    lstm, gru = LSTMScratch(NUM_INPUTS, NUM_HIDDENS), GRUScratch(NUM_INPUTS, NUM_HIDDENS)
    assert [n for n, _ in lstm.named_parameters()] == [
        "W_xi", "W_hi", "b_i", "W_xf", "W_hf", "b_f", "W_xo", "W_ho", "b_o", "W_xc", "W_hc", "b_c"]
    assert [n for n, _ in gru.named_parameters()] == ["W_xz", "W_hz", "b_z", "W_xr", "W_hr", "b_r", "W_xh", "W_hh",
                                                      "b_h"]
    big = LSTMScratch(256, 256)
    assert abs(big.W_xi.std().item() - 0.01) < 5e-4 and big.W_xi.shape == (256, 256)
    assert all(torch.count_nonzero(getattr(big, f"b_{g}")) == 0 for g in "ifoc")
    assert GRUScratch(NUM_INPUTS, NUM_HIDDENS, reset_after=True).b_hn.shape == (NUM_HIDDENS,)


def test_lstm_matches_nn_lstm():
    scratch, ref = LSTMScratch(NUM_INPUTS, NUM_HIDDENS), nn.LSTM(NUM_INPUTS, NUM_HIDDENS)
    randomise(ref)  # both biases nonzero: the scratch layer holds their sum
    load_from = {k.removesuffix("_l0"): v for k, v in ref.state_dict().items()}
    load_torch_weights(scratch, **load_from)
    X = inputs()
    H0, C0 = torch.randn(BATCH, NUM_HIDDENS), torch.randn(BATCH, NUM_HIDDENS)
    out, (H, C) = scratch(X, (H0, C0))
    ref_out, (ref_H, ref_C) = ref(X, (H0[None], C0[None]))
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close((H, C), (ref_H[0], ref_C[0]), atol=1e-6, rtol=1e-5)
    # and back: the scratch layer's weights in PyTorch's layout (bias_hh zero) give the same function
    again = nn.LSTM(NUM_INPUTS, NUM_HIDDENS)
    again.load_state_dict({f"{k}_l0": v for k, v in torch_weights(scratch).items()})
    torch.testing.assert_close(again(X, (H0[None], C0[None]))[0], ref_out, atol=1e-6, rtol=1e-5)


def test_lstm_gate_order_matters():
    """A permutation of PyTorch's (i, f, g, o) blocks must not pass: the copy really follows the gate order."""
    scratch, ref = LSTMScratch(NUM_INPUTS, NUM_HIDDENS), nn.LSTM(NUM_INPUTS, NUM_HIDDENS)
    randomise(ref)
    w = {k.removesuffix("_l0"): v for k, v in ref.state_dict().items()}
    h = NUM_HIDDENS
    swap = lambda t: torch.cat((t[h:2 * h], t[:h], t[2 * h:]))  # noqa: E731 - i <-> f
    load_torch_weights(scratch, **{k: swap(v) for k, v in w.items()})
    assert not torch.allclose(scratch(inputs())[0], ref(inputs())[0], atol=1e-3)


def test_gru_reset_after_matches_nn_gru_with_nonzero_b_hn():
    scratch, ref = GRUScratch(NUM_INPUTS, NUM_HIDDENS, reset_after=True), nn.GRU(NUM_INPUTS, NUM_HIDDENS)
    randomise(ref)
    assert ref.bias_hh_l0[2 * NUM_HIDDENS:].abs().min() > 0  # b_hn is nonzero
    load_torch_weights(scratch, **{k.removesuffix("_l0"): v for k, v in ref.state_dict().items()})
    X, H0 = inputs(), torch.randn(BATCH, NUM_HIDDENS)
    out, H = scratch(X, H0)
    ref_out, ref_H = ref(X, H0[None])
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(H, ref_H[0], atol=1e-6, rtol=1e-5)
    again = nn.GRU(NUM_INPUTS, NUM_HIDDENS)
    again.load_state_dict({f"{k}_l0": v for k, v in torch_weights(scratch).items()})
    torch.testing.assert_close(again(X, H0[None])[0], ref_out, atol=1e-6, rtol=1e-5)


def _book_and_torch_gru(b_hn: float, diagonal: bool):
    """A book-form GRUScratch and an nn.GRU with the same weights: the reset-after twin loads nn.GRU's weights and
    the book form takes them all but b_hn."""
    ref = nn.GRU(NUM_INPUTS, NUM_HIDDENS)
    randomise(ref)
    h = NUM_HIDDENS
    with torch.no_grad():
        ref.bias_hh_l0[2 * h:] = b_hn
        if diagonal:  # the candidate's recurrent weight W_hn diagonal
            ref.weight_hh_l0[2 * h:] = torch.diag(torch.randn(h))
    twin = GRUScratch(NUM_INPUTS, h, reset_after=True)
    load_torch_weights(twin, **{k.removesuffix("_l0"): v for k, v in ref.state_dict().items()})
    book = GRUScratch(NUM_INPUTS, h)
    book.load_state_dict({k: v for k, v in twin.state_dict().items() if k != "b_hn"})
    return book, ref


def test_book_gru_equals_nn_gru_exactly_when_w_hn_is_diagonal_and_b_hn_zero():
    """The book's H_tilde = tanh(X W_xh + (R*H) W_hh + b_h) and PyTorch's tanh(X W_in + b_in + R*(H W_hn + b_hn))
    agree for every input iff (R*H) W = R*(H W), i.e. W_hn diagonal, and b_hn = 0."""
    X, H0 = inputs(), torch.randn(BATCH, NUM_HIDDENS)
    book, ref = _book_and_torch_gru(b_hn=0.0, diagonal=True)
    torch.testing.assert_close(book(X, H0)[0], ref(X, H0[None])[0], atol=1e-6, rtol=1e-5)
    for b_hn, diagonal in ((0.7, True), (0.0, False)):  # either difference alone shows
        book, ref = _book_and_torch_gru(b_hn=b_hn, diagonal=diagonal)
        assert (book(X, H0)[0] - ref(X, H0[None])[0]).abs().max() > 1e-2, (b_hn, diagonal)
    with pytest.raises(ValueError, match="reset_after"):
        torch_weights(book)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_stacked_scratch_matches_torch(cell, num_layers):
    ref = (nn.GRU if cell == "gru" else nn.LSTM)(NUM_INPUTS, NUM_HIDDENS, num_layers)
    randomise(ref)
    scratch = StackedRNNScratch(NUM_INPUTS, NUM_HIDDENS, num_layers, cell=cell, reset_after=True)
    load_from_torch(scratch, ref)
    X = inputs()
    out, state = scratch(X)  # zero initial state
    ref_out, ref_state = ref(X)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(state, ref_state, atol=1e-6, rtol=1e-5)
    # carried state: two halves of the sequence give the whole
    first, mid = scratch(X[:3])
    second, end = scratch(X[3:], mid)
    torch.testing.assert_close(torch.cat((first, second)), out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(end, state, atol=1e-6, rtol=1e-5)


def test_gradients_match_torch():
    """Backward through the scratch loop equals PyTorch's kernels' (the layers train the same)."""
    ref = nn.GRU(NUM_INPUTS, NUM_HIDDENS, 2)
    randomise(ref)
    scratch = StackedRNNScratch(NUM_INPUTS, NUM_HIDDENS, 2, reset_after=True)
    load_from_torch(scratch, ref)
    X = inputs()
    scratch(X)[0].square().sum().backward()
    ref(X)[0].square().sum().backward()
    layer = scratch.rnns[1]
    torch.testing.assert_close(layer.W_hh.grad.T, ref.weight_hh_l1.grad[2 * NUM_HIDDENS:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer.W_xz.grad.T, ref.weight_ih_l1.grad[NUM_HIDDENS:2 * NUM_HIDDENS],
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer.b_hn.grad, ref.bias_hh_l1.grad[2 * NUM_HIDDENS:], atol=1e-5, rtol=1e-4)


def test_unknown_cell():
    with pytest.raises(ValueError, match="gru, lstm"):
        StackedRNNScratch(NUM_INPUTS, NUM_HIDDENS, 2, cell="tanh")
