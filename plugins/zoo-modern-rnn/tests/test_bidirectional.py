"""The bidirectional blocks (d2l §10.4): BiRNNScratch against nn.GRU(bidirectional=True) with copied weights,
BiGRU exported to ONNX with the time axis symbolic."""

from collections.abc import Mapping

import pytest
import torch
from torch import nn

from zoo_core import GraphSpec, Model, check_parity
from zoo_core.onnx_export import export_graph, parity_dims
from zoo_modern_rnn.bidirectional import BiGRU, BiRNNScratch, load_from_torch, merge_directions

NUM_STEPS, BATCH, NUM_INPUTS, NUM_HIDDENS = 6, 3, 5, 4


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    torch.manual_seed(0)


def randomise(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_scratch_matches_torch_bidirectional(cell, num_layers):
    ref = (nn.GRU if cell == "gru" else nn.LSTM)(NUM_INPUTS, NUM_HIDDENS, num_layers, bidirectional=True)
    randomise(ref)  # the GRU's b_hn nonzero: the reset-after form is needed
    scratch = BiRNNScratch(NUM_INPUTS, NUM_HIDDENS, num_layers, cell=cell, reset_after=True)
    load_from_torch(scratch, ref)
    X = torch.randn(NUM_STEPS, BATCH, NUM_INPUTS)
    out, state = scratch(X)
    ref_out, ref_state = ref(X)
    assert out.shape == (NUM_STEPS, BATCH, 2 * NUM_HIDDENS) == (NUM_STEPS, BATCH, scratch.num_outputs)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(state, ref_state, atol=1e-6, rtol=1e-5)
    # a given initial state, in nn.GRU's layout
    H0 = torch.randn(2 * num_layers, BATCH, NUM_HIDDENS)
    H0 = (H0, torch.randn_like(H0)) if cell == "lstm" else H0
    torch.testing.assert_close(scratch(X, H0), ref(X, H0), atol=1e-6, rtol=1e-5)


def test_directions_see_the_past_and_the_future():
    """The forward half of output t depends only on inputs <= t, the backward half only on inputs >= t."""
    rnn = BiRNNScratch(NUM_INPUTS, NUM_HIDDENS, cell="gru", sigma=0.5)
    X = torch.randn(NUM_STEPS, BATCH, NUM_INPUTS)
    Y = X.clone()
    Y[-1] += 1  # change only the last step
    a, b = rnn(X)[0], rnn(Y)[0]
    torch.testing.assert_close(a[:-1, :, :NUM_HIDDENS], b[:-1, :, :NUM_HIDDENS])  # forward: the past unchanged
    assert (a[0, :, NUM_HIDDENS:] - b[0, :, NUM_HIDDENS:]).abs().max() > 1e-4   # backward: step 0 sees the end


def test_bigru_is_nn_gru_and_interchangeable():
    bigru = BiGRU(NUM_INPUTS, NUM_HIDDENS, num_layers=2)
    assert bigru.rnn.bidirectional and bigru.num_outputs == 2 * NUM_HIDDENS
    scratch = BiRNNScratch(NUM_INPUTS, NUM_HIDDENS, num_layers=2, reset_after=True)
    load_from_torch(scratch, bigru.rnn)
    X = torch.randn(NUM_STEPS, BATCH, NUM_INPUTS)
    torch.testing.assert_close(scratch(X), bigru(X), atol=1e-6, rtol=1e-5)


def test_dropout_between_layers_only_in_training():
    rnn = BiRNNScratch(NUM_INPUTS, NUM_HIDDENS, num_layers=2, dropout=0.5, sigma=0.5)
    X = torch.randn(NUM_STEPS, BATCH, NUM_INPUTS)
    rnn.eval()
    torch.testing.assert_close(rnn(X)[0], rnn(X)[0])
    rnn.train()
    assert not torch.equal(rnn(X)[0], rnn(X)[0])


def test_merge_directions():
    state = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).reshape(4, 3, 4)  # (2 layers * 2 directions, batch, h)
    merged = merge_directions(state)
    assert merged.shape == (2, 3, 8)
    torch.testing.assert_close(merged[1], torch.cat((state[2], state[3]), -1))


class _Block(Model):
    """A bidirectional block as a one-graph model, for the core's export and parity."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, X):  # (num_steps, batch, num_inputs) -> outputs, state
        return self.rnn(X)

    def graph_inputs(self, name: str, dims: Mapping[str, int]):
        return (torch.randn(dims.get("seq", NUM_STEPS), dims["batch"], NUM_INPUTS),)


def test_bigru_exports_with_symbolic_time_and_matches_onnx_runtime(tmp_path):
    """The export (ONNX GRU, direction bidirectional, linear_before_reset=1) keeps seq symbolic; ONNX Runtime agrees
    at an untraced batch and length, with b_hn far from zero."""
    model = _Block(BiGRU(NUM_INPUTS, NUM_HIDDENS, num_layers=2)).eval()
    randomise(model)
    graph = GraphSpec("model", ("X: float32[seq, batch, 5]",),
                      ("outputs: float32[seq, batch, 8]", "state: float32[4, batch, 4]"))
    info = export_graph(model, graph, tmp_path / "model.onnx")
    assert info["outputs"][0]["shape"] == ["seq", "batch", 8]
    dims = parity_dims(graph)
    result = check_parity(model, tmp_path / "model.onnx", model.graph_inputs("model", dims), atol=1e-5, rtol=1e-4,
                          dims=dims)
    assert result.passed, str(result)


def test_scratch_exports_with_symbolic_batch(tmp_path):
    """The scratch block loops over time in Python: its graph fixes the length, the batch stays symbolic."""
    model = _Block(BiRNNScratch(NUM_INPUTS, NUM_HIDDENS, cell="gru", sigma=0.5)).eval()
    graph = GraphSpec("model", (f"X: float32[{NUM_STEPS}, batch, 5]",),
                      (f"outputs: float32[{NUM_STEPS}, batch, 8]", "state: float32[2, batch, 4]"))
    export_graph(model, graph, tmp_path / "model.onnx")
    dims = parity_dims(graph)
    result = check_parity(model, tmp_path / "model.onnx", model.graph_inputs("model", dims), atol=1e-5, rtol=1e-4,
                          dims=dims)
    assert result.passed, str(result)
