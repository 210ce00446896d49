"""Chapter 10's language models (d2l §10.1-10.3): scratch/concise pairs agree with the same weights, the step graph
replays the forward pass, the exported graphs match ONNX Runtime (a GRU's with b_hn far from zero), the book's
recipes, and (slow, real data) the book's perplexities."""

import json
import math

import pytest
import torch
from torch import nn

from zoo_core import get_data, get_model, get_spec
from zoo_modern_rnn.language_models import (
    DeepRNNLM, DeepRNNLMScratch, GRULM, GRULMScratch, LSTMLM, LSTMLMScratch, load_concise_weights,
)

V = 28
PAIRS = {  # scratch twin (able to hold the concise weights), concise model
    "lstm": (lambda: LSTMLMScratch(V, 6), lambda: LSTMLM(V, 6)),
    "gru": (lambda: GRULMScratch(V, 6, reset_after=True), lambda: GRULM(V, 6)),
    "deep-gru": (lambda: DeepRNNLMScratch(V, 6, 3, reset_after=True), lambda: DeepRNNLM(V, 6, 3)),
    "deep-lstm": (lambda: DeepRNNLMScratch(V, 6, 2, cell="lstm"), lambda: DeepRNNLM(V, 6, 2, cell="lstm")),
}
ALL = [LSTMLMScratch, LSTMLM, GRULMScratch, GRULM, DeepRNNLMScratch, DeepRNNLM]
NAMES = ["lstm-lm-scratch", "lstm-lm", "gru-lm-scratch", "gru-lm", "deep-rnn-lm-scratch", "deep-rnn-lm"]


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    torch.manual_seed(0)


def randomise(module: nn.Module, scale: float = 0.5) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, scale)


def tokens(batch: int = 3, steps: int = 9) -> torch.Tensor:
    return torch.randint(0, V, (batch, steps))


@pytest.mark.parametrize("pair", PAIRS)
def test_scratch_and_concise_agree_with_the_same_weights(pair):
    scratch, concise = (make() for make in PAIRS[pair])
    randomise(concise)  # every bias nonzero, the GRUs' b_hn included
    load_concise_weights(scratch, concise)
    X = tokens()
    torch.testing.assert_close(scratch(X), concise(X), atol=1e-5, rtol=1e-4)
    # and their steps, from the same state
    state = tuple(torch.rand_like(s) for s in concise.begin_state(3))
    for a, b in zip(scratch.forward_step(X[:, 0], *state), concise.forward_step(X[:, 0], *state)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_the_books_gru_is_nn_grus_only_with_diagonal_w_hn_and_zero_b_hn():
    """gru-lm-scratch is the book's GRU (reset before the product): with nn.GRU's weights it gives nn.GRU's logits
    when the candidate's recurrent weight is diagonal and b_hn is zero, and differs otherwise."""
    concise, twin = GRULM(V, 6), GRULMScratch(V, 6, reset_after=True)
    randomise(concise)
    h = 6
    X = tokens()

    def book_twin() -> GRULMScratch:
        load_concise_weights(twin, concise)
        book = GRULMScratch(V, 6)
        book.load_state_dict({k: v for k, v in twin.state_dict().items() if k != "rnn.b_hn"})
        return book

    with torch.no_grad():
        concise.rnn.weight_hh_l0[2 * h:] = torch.diag(torch.randn(h))
        concise.rnn.bias_hh_l0[2 * h:] = 0
    torch.testing.assert_close(book_twin()(X), concise(X), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        concise.rnn.bias_hh_l0[2 * h:] = 0.5
    assert (book_twin()(X) - concise(X)).abs().max() > 1e-2
    with pytest.raises(ValueError, match="reset_after"):
        load_concise_weights(GRULMScratch(V, 6), concise)


@pytest.mark.parametrize("cls", ALL)
def test_step_by_step_replays_the_forward_pass(cls):
    model = cls(V, 5)
    randomise(model)
    X = tokens()
    logits = model(X)
    assert logits.shape == (3, 9, V)
    state = model.begin_state(3)
    for t in range(X.shape[1]):
        out, *state = model.forward_step(X[:, t], *state)
        torch.testing.assert_close(out, logits[:, t], atol=1e-5, rtol=1e-4)


def test_deep_lstm_state_layout():
    model = DeepRNNLM(V, 5, num_layers=3, cell="lstm")
    assert model.state_names == ("H", "C")
    assert [tuple(s.shape) for s in model.begin_state(2)] == [(2, 3, 5), (2, 3, 5)]
    with pytest.raises(ValueError, match="gru or lstm"):
        DeepRNNLM(V, 5, cell="rnn")


def test_book_initialisation():
    """Scratch: weights N(0, 0.01^2), biases zero (the book's); concise: PyTorch's defaults (the book's RNNLM)."""
    scratch = DeepRNNLMScratch(V, 256, 2)
    weights = [p for n, p in scratch.named_parameters() if ".W_" in n or n == "W_hq"]
    assert all(abs(p.std().item() - 0.01) < 1e-3 for p in weights)
    assert all(torch.count_nonzero(p) == 0 for n, p in scratch.named_parameters() if ".b_" in n or n == "b_q")
    concise = GRULM(V, 32)
    bound = 1 / math.sqrt(32)
    assert concise.rnn.bias_hh_l0.abs().max() <= bound and concise.rnn.bias_hh_l0.abs().min() > 0


@pytest.mark.parametrize("name", ["gru-lm", "deep-rnn-lm"])
def test_gru_graphs_match_onnx_runtime_with_a_large_b_hn(name, tmp_path):
    """Both graphs hold nn.GRU as ONNX's GRU operator: with b_hn far from zero, a wrong linear_before_reset
    (onnxscript 0.5.7-0.7.0 wrote 0) would be off by far more than the tolerance. At an untraced batch and length."""
    from zoo_core import check_parity
    from zoo_core.onnx_export import export_graph, parity_dims

    spec = get_spec(name)
    model = get_model(name, "tiny").eval()
    h = model.num_hiddens
    with torch.no_grad():
        for k in range(model.rnn.num_layers):
            getattr(model.rnn, f"bias_hh_l{k}")[2 * h:] = torch.linspace(-2, 2, h)
    for graph in spec.graph_specs("tiny"):
        export_graph(model, graph, tmp_path / graph.file, exporter=spec.onnx_exporter)
        dims = parity_dims(graph)
        result = check_parity(model.graph_module(graph.name), tmp_path / graph.file,
                              model.graph_inputs(graph.name, dims), atol=1e-5, rtol=1e-4, dims=dims)
        assert result.passed, f"{graph.file}: {result}"
    import onnx

    for graph in spec.graph_specs("tiny"):  # the operator whose linear_before_reset the pin is about
        assert "GRU" in {node.op_type for node in onnx.load(str(tmp_path / graph.file)).graph.node}


PREFIXES = ["time traveller", "it has", "the", "a", "we said the"]


@pytest.mark.parametrize("name", NAMES)
def test_continuations_on_onnx_runtime_equal_pytorchs(name, tmp_path):
    """20-character continuations of five prefixes, greedy and beam 4, from the exported step graph on ONNX Runtime
    and from PyTorch: the same tokens (issue 8's export check, on the tiny preset with weights spread enough that
    the choices are not near-ties)."""
    from zoo_core.decoding import OnnxRunner, TorchRunner, continue_prefixes
    from zoo_core.onnx_export import export_graph

    spec = get_spec(name)
    model = get_model(name, "tiny").eval()
    randomise(model, 0.7)
    step = [g for g in spec.graph_specs("tiny") if g.role == "step"]
    export_graph(model, step[0], tmp_path / step[0].file, exporter=spec.onnx_exporter)
    data = get_data(name, "tiny")
    data.load()
    prefixes = [data.vocab[list(p)] for p in PREFIXES]
    runners = TorchRunner(model, step), OnnxRunner({step[0].name: tmp_path / step[0].file}, step)
    for beam in (1, 4):
        on_torch, on_onnx = (continue_prefixes(r, prefixes, 20, beam_size=beam) for r in runners)
        assert on_torch == on_onnx and all(len(c) == 20 for c in on_torch)


def test_book_presets_are_the_books_recipes():
    for name in NAMES:
        book = get_spec(name).preset("book")
        assert dict(book.data) == {"batch_size": 1024, "num_steps": 32, "num_train": 10000, "num_val": 5000}
        assert book.model["num_hiddens"] == 32 and book.train["gradient_clip_val"] == 1.0
        deep = name.startswith("deep")
        assert (book.model["lr"], book.train["max_epochs"]) == ((2.0, 100) if deep else (4.0, 50))
        assert book.model.get("num_layers", 1) == (2 if deep else 1)
        graphs = [g.name for g in get_spec(name).graph_specs("book")]
        assert graphs == (["step"] if name.endswith("scratch") else ["model", "step"])
    assert get_spec("deep-rnn-lm-scratch").preset("book").model["sigma"] == 0.1  # see plugin.py: 0.01 starves it
    assert "sigma" not in get_spec("gru-lm-scratch").preset("book").model  # the book's 0.01
    assert get_spec("deep-rnn-lm").preset("book").num_params == 13212  # nn.GRU(28, 32, 2) + Linear(32, 28)
    assert get_spec("gru-lm-scratch").preset("book").num_params == 6780  # 3 gates x (28x32 + 32x32 + 32) + 32x28 + 28


def test_predict_continues_a_prefix():
    data = get_data("gru-lm", "tiny")
    data.load()
    model = get_model("gru-lm-scratch", "tiny")
    out = model.predict("the time", 5, data.vocab)
    assert out.startswith("the time") and len(out) == len("the time") + 5
    assert model.predict("the time", 5, data.vocab, beam=3).startswith("the time")


# --- the book's figures (real data, minutes: -m slow) ------------------------------------------------------------
# Validation perplexity at the book's epochs, seed 0; the d2l reference in the same conditions (issue 8): lstm-lm
# 7.065, gru-lm 6.467, deep-gru-lm 6.435; targets: at most 2% above. The concise models train with rng="book", the
# reference's random stream at seed 0 replayed, so that they compare seed for seed (one seed moves gru-lm by +-0.2).
# The reference has no from-scratch LSTM or GRU: theirs is "a similar quality", at most 5% above the concise reference.
TARGETS = {"lstm-lm": 7.21, "gru-lm": 6.60, "deep-rnn-lm": 6.56,
           "lstm-lm-scratch": 7.42, "gru-lm-scratch": 6.79, "deep-rnn-lm-scratch": 6.76}


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("name", list(TARGETS))
def test_book_recipe_reaches_the_books_perplexity(name, tmp_path):
    from zoo_core import Trainer
    from zoo_core.testing import require_data

    require_data("time-machine")
    spec = get_spec(name)
    book = spec.preset("book")
    data = get_data(name, "book")
    model = get_model(name, "book")
    rng = "book" if model.replays_book_rng else "zoo"
    result = Trainer(**book.train, device="cpu", seed=0, rng=rng, progress=False,
                     log=lambda line: None).fit(model, data)
    (tmp_path / "result.json").write_text(json.dumps(result.metrics))
    assert result.metrics["val_ppl"] <= TARGETS[name], result.metrics


# --- --rng book: the book's run replayed (zoo_core.book_rng) ------------------------------------------------------

@pytest.mark.parametrize("name, layer", [("lstm-lm", nn.LSTM), ("gru-lm", nn.GRU), ("deep-rnn-lm", nn.GRU)])
def test_rng_book_replays_the_books_training_run(name, layer):
    """Trained with ``--rng book``, the tiny preset ends where d2l's ``RNNLM`` around the same PyTorch layer, trained
    by the book's loop from the same seed, ends."""
    from zoo_core.testing import assert_rng_book_replays_the_book, book_lm_loss, book_rnn_lm

    hp = get_spec(name).preset("tiny").model
    V, H = hp["vocab_size"], hp["num_hiddens"]
    assert_rng_book_replays_the_book(
        name, lambda: book_rnn_lm(layer(V, H, hp.get("num_layers", 1)), V), book_lm_loss,
        lambda model: torch.optim.SGD(model.parameters(), lr=hp["lr"]))
