"""Decoding (`zoo_core.decoding`) against exhaustive search on small hand-made step models, and PyTorch against
ONNX Runtime token for token.

Three models, each a `zoo_core.Model` whose graphs a `GraphSpec` declares, as a real generation model's are:
- `BookTable`: the example of d2l §10.8 (Figs. 10.8.1-10.8.2), where greedy search finds A B C <eos> (P 0.048) and
  a beam of two finds A C B <eos> (P 0.054); its logits are a table indexed by (time step, previous token).
- `TinyRNN`: a random tanh RNN language model (state h), small enough that every sequence can be enumerated.
- `TinySeq2Seq`: an encoder (memory ``context`` and initial state ``h``), a state no encoder produces (``count``,
  zero at the start), inputs declared in another order than the state, and an extra output (``attn``).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from zoo_core import GraphSpec, Model
from zoo_core.decoding import OnnxRunner, TorchRunner, beam_search, continue_prefixes, greedy
from zoo_core.onnx_export import export_graph

EOS, A, B, C, BOS = range(5)  # the book example's tokens; BOS is never predicted


class _Step(nn.Module):
    """A graph module whose ``forward`` is one of the model's methods (parameters shared; the method's own
    signature, which torch.export reads to match inputs to dynamic shapes)."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.forward = getattr(model, method)


class StepModel(Model):
    """Test models: graphs by name; `graph_inputs` gives random inputs for export."""

    graph_methods: dict[str, str] = {}

    def graph_module(self, name: str) -> nn.Module:
        return _Step(self, self.graph_methods[name])


class BookTable(StepModel):
    """d2l Fig. 10.8.1: P(y_t | y_<t) as a table indexed by (t, y_{t-1}); rows the book leaves out are uniform."""

    graphs = (GraphSpec("step", ["tokens: int64[batch]", "t: int64[batch]"],
                        ["logits: float32[batch, 5]", "next_t: int64[batch]"], role="step", state=("t",)),)
    graph_methods = {"step": "step"}

    def __init__(self) -> None:
        super().__init__()
        p = torch.full((4, 5, 5), 0.25)
        p[0, BOS] = torch.tensor([0.1, 0.5, 0.2, 0.2, 0.0])      # t=1: A 0.5
        p[1, A] = torch.tensor([0.2, 0.1, 0.4, 0.3, 0.0])        # after A: B 0.4, C 0.3
        p[2, B] = torch.tensor([0.2, 0.2, 0.2, 0.4, 0.0])        # after A B: C 0.4
        p[2, C] = torch.tensor([0.1, 0.1, 0.6, 0.2, 0.0])        # after A C: B 0.6
        p[3, C] = torch.tensor([0.6, 0.1, 0.1, 0.2, 0.0])        # after A B C: <eos> 0.6
        p[3, B] = torch.tensor([0.6, 0.2, 0.1, 0.1, 0.0])        # after A C B: <eos> 0.6
        p[..., BOS] = 0.0
        p = p / p.sum(-1, keepdim=True)
        self.register_buffer("log_p", p.log())

    def step(self, tokens: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return self.log_p[t.clamp(max=3), tokens], t + 1

    def graph_inputs(self, name, dims):
        return torch.randint(0, 5, (dims["batch"],)), torch.randint(0, 4, (dims["batch"],))


class TinyRNN(StepModel):
    """h' = tanh(E[token] + h W), logits = scale * h' O: a random language model with a real hidden state."""

    graph_methods = {"step": "step"}

    def __init__(self, vocab: int = 5, hidden: int = 3, scale: float = 3.0, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.E = nn.Parameter(torch.randn(vocab, hidden, generator=g))
        self.W = nn.Parameter(torch.randn(hidden, hidden, generator=g))
        self.O = nn.Parameter(torch.randn(hidden, vocab, generator=g) * scale)
        self.graphs = (GraphSpec("step", ["tokens: int64[batch]", f"h: float32[batch, {hidden}]"],
                                 [f"logits: float32[batch, {vocab}]", f"next_h: float32[batch, {hidden}]"],
                                 role="step", state=("h",)),)

    def step(self, tokens: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.E[tokens] + h @ self.W)
        return h @ self.O, h

    def graph_inputs(self, name, dims):
        return torch.randint(0, len(self.E), (dims["batch"],)), torch.randn(dims["batch"], self.W.shape[0])


class TinySeq2Seq(StepModel):
    """An encoder-decoder of the zoo's step-graph shape: the encoder's outputs feed the step graph's inputs of the
    same names; ``count`` (the number of steps taken) starts at zero; ``attn`` is an extra output."""

    graph_methods = {"encoder": "encode", "decoder_step": "step"}

    def __init__(self, vocab: int = 6, hidden: int = 4, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.E = nn.Parameter(torch.randn(vocab, hidden, generator=g))
        self.W = nn.Parameter(torch.randn(hidden, hidden, generator=g))
        self.O = nn.Parameter(torch.randn(hidden, vocab, generator=g) * 3)
        self.graphs = (
            GraphSpec("encoder", ["src: int64[batch, seq]", "src_valid_len: int64[batch]"],
                      [f"context: float32[batch, {hidden}]", f"h: float32[batch, {hidden}]"], role="encoder"),
            GraphSpec("decoder_step",
                      ["tokens: int64[batch]", f"context: float32[batch, {hidden}]", "count: float32[batch, 1]",
                       f"h: float32[batch, {hidden}]"],
                      [f"logits: float32[batch, {vocab}]", f"next_h: float32[batch, {hidden}]",
                       "next_count: float32[batch, 1]", "attn: float32[batch, 1]"],
                      role="step", state=("h", "count")))

    def encode(self, src: Tensor, src_valid_len: Tensor) -> tuple[Tensor, Tensor]:
        mask = (torch.arange(src.shape[1]) < src_valid_len[:, None]).float()       # ignore padding
        context = (self.E[src] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return context, torch.tanh(context @ self.W)

    def step(self, tokens: Tensor, context: Tensor, count: Tensor, h: Tensor) -> tuple[Tensor, ...]:
        h = torch.tanh(self.E[tokens] + h @ self.W + context + 0.3 * count)
        return h @ self.O, h, count + 1, torch.sigmoid(h.sum(1, keepdim=True))

    def graph_inputs(self, name, dims):
        b, hidden = dims["batch"], self.W.shape[0]
        if name == "encoder":
            return torch.randint(0, len(self.E), (b, dims["seq"])), torch.randint(1, dims["seq"] + 1, (b,))
        return (torch.randint(0, len(self.E), (b,)), torch.randn(b, hidden), torch.rand(b, 1),
                torch.randn(b, hidden))


def book_runner() -> TorchRunner:
    model = BookTable()
    return TorchRunner(model, model.graphs)


def exhaustive(runner, state, first: int, max_len: int, eos: int | None, alpha: float) -> list[tuple[float, list]]:
    """Every complete sequence of one example (ended by `eos`, or `max_len` long) with its score log P / L^alpha,
    best first: the optimum beam search approximates, by brute force."""
    complete = []
    frontier = [([], 0.0, state, first)]
    for t in range(max_len):
        grown = []
        for seq, logp, st, token in frontier:
            logits, new, _ = runner.step(torch.tensor([token]), st)
            for v, lp in enumerate(logits.double().log_softmax(-1)[0].tolist()):
                if lp == -math.inf:
                    continue
                if v == eos:
                    complete.append(((logp + lp) / (t + 1) ** alpha, seq))
                elif t == max_len - 1:
                    complete.append(((logp + lp) / max_len ** alpha, seq + [v]))
                else:
                    grown.append((seq + [v], logp + lp, new, v))
        frontier = grown
    return sorted(complete, key=lambda c: -c[0])


# --- the book's example ---------------------------------------------------------------------------------------------

def test_greedy_misses_what_a_beam_of_two_finds_the_books_example():
    runner = book_runner()
    state, first = runner.start(batch_size=1), torch.tensor([BOS])
    assert greedy(runner, state, first, max_len=10, eos=EOS) == [[A, B, C]]                   # P = 0.048
    assert beam_search(runner, state, first, max_len=10, beam_size=1, eos=EOS) == [[A, B, C]]
    assert beam_search(runner, state, first, max_len=10, beam_size=2, eos=EOS) == [[A, C, B]]   # P = 0.054
    best = exhaustive(runner, state, BOS, max_len=5, eos=EOS, alpha=0.75)
    assert best[0][1] == [A, C, B] and best[0][0] == pytest.approx(math.log(0.054) / 4 ** 0.75)
    assert beam_search(runner, state, first, max_len=5, beam_size=5 ** 5, eos=EOS) == [[A, C, B]]


def test_the_length_penalty_is_log_p_over_l_to_the_alpha():
    """With alpha 0, log P alone: the short 'A <eos>' (0.5 * 0.2 = 0.1) beats every 4-token sequence (<= 0.054);
    with the book's 0.75 the long one wins. L counts <eos>."""
    runner = book_runner()
    state, first = runner.start(batch_size=1), torch.tensor([BOS])
    wide = 5 ** 5
    assert beam_search(runner, state, first, 5, wide, eos=EOS, alpha=0.0) == [[A]]
    assert exhaustive(runner, state, BOS, 5, EOS, alpha=0.0)[0] == (pytest.approx(math.log(0.1)), [A])
    assert beam_search(runner, state, first, 5, wide, eos=EOS, alpha=0.75) == [[A, C, B]]


# --- against exhaustive search ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alpha", [0.0, 0.75, 1.0])
def test_a_wide_beam_finds_the_exhaustive_optimum(seed, alpha):
    model = TinyRNN(vocab=4, seed=seed)
    runner = TorchRunner(model, model.graphs)
    max_len = 4
    for first in range(1, 4):
        state = runner.start(batch_size=1)
        ranked = exhaustive(runner, state, first, max_len, eos=0, alpha=alpha)
        assert ranked[0][0] > ranked[1][0] + 1e-9  # a unique optimum
        found = beam_search(runner, state, torch.tensor([first]), max_len, beam_size=4 ** max_len, eos=0, alpha=alpha)
        assert found == [ranked[0][1]]


@pytest.mark.parametrize("seed", range(10))
def test_beam_size_one_is_greedy_token_for_token(seed):
    model = TinyRNN(vocab=6, hidden=4, seed=seed)
    runner = TorchRunner(model, model.graphs)
    first = torch.arange(8) % 6
    for eos, max_len in ((0, 12), (None, 7), (3, 1), (0, 0)):
        state = runner.start(batch_size=8)
        expected = greedy(runner, state, first, max_len, eos)
        assert beam_search(runner, state, first, max_len, 1, eos) == expected
        if eos is None:
            assert all(len(row) == max_len for row in expected)


def test_greedy_is_the_argmax_of_the_logits():
    model = TinyRNN(vocab=6, hidden=4, seed=3)
    runner = TorchRunner(model, model.graphs)
    state, tokens, expected = runner.start(batch_size=4), torch.arange(4), []
    for _ in range(6):
        logits, state, _ = runner.step(tokens, state)
        tokens = logits.argmax(-1)
        expected.append(tokens)
    assert greedy(runner, runner.start(batch_size=4), torch.arange(4), 6) == torch.stack(expected, 1).tolist()


# --- <eos>, lengths, batches -------------------------------------------------------------------------------------------

def test_each_example_stops_at_its_own_eos():
    runner = book_runner()
    # row 0 starts at <bos> (A B C <eos>); row 1 starts from C at t=3, whose most likely token is <eos>
    state = {"t": torch.tensor([0, 3])}
    first = torch.tensor([BOS, C])
    assert greedy(runner, state, first, max_len=10, eos=EOS) == [[A, B, C], []]
    assert beam_search(runner, state, first, max_len=10, beam_size=2, eos=EOS) == [[A, C, B], []]
    # max_len cuts: at most max_len tokens, <eos> included
    assert greedy(runner, state, first, max_len=2, eos=EOS) == [[A, B], []]
    assert beam_search(runner, state, first, max_len=2, beam_size=2, eos=EOS) == [[A, B], []]
    assert greedy(runner, state, first, max_len=0, eos=EOS) == [[], []]
    assert beam_search(runner, state, first, max_len=0, beam_size=3, eos=EOS) == [[], []]
    with pytest.raises(ValueError, match="beam size"):
        beam_search(runner, state, first, max_len=3, beam_size=0)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_batch_decodes_as_each_example_alone(beam_size):
    model = TinySeq2Seq(seed=10)
    runner = TorchRunner(model, model.graphs)
    g = torch.Generator().manual_seed(0)
    src, valid = torch.randint(1, 6, (7, 5), generator=g), torch.tensor([5, 1, 3, 2, 5, 4, 2])
    first = torch.full((7,), 1)
    search = (lambda r, s, f: greedy(r, s, f, 8, eos=0)) if beam_size == 1 else \
        (lambda r, s, f: beam_search(r, s, f, 8, beam_size, eos=0))
    together = search(runner, runner.start(src, valid), first)
    alone = [search(runner, runner.start(src[i:i + 1], valid[i:i + 1]), first[i:i + 1])[0] for i in range(7)]
    assert together == alone
    assert len({tuple(r) for r in together}) > 1 and any(len(r) < 8 for r in together)  # not a trivial case


def test_start_runs_the_encoder_and_zeroes_the_state_it_does_not_produce():
    model = TinySeq2Seq()
    runner = TorchRunner(model, model.graphs)
    src, valid = torch.randint(0, 6, (3, 4)), torch.tensor([4, 2, 1])
    state = runner.start(src, valid)
    assert list(state) == ["context", "count", "h"]  # the step graph's inputs after tokens, in its order
    context, h = model.encode(src, valid)
    torch.testing.assert_close(state["context"], context)
    torch.testing.assert_close(state["h"], h)
    assert torch.equal(state["count"], torch.zeros(3, 1))
    logits, new, extras = runner.step(torch.tensor([1, 2, 3]), state)
    assert logits.shape == (3, 6) and runner.vocab_size == 6
    assert new["context"] is state["context"]  # memory is carried unchanged
    assert torch.equal(new["count"], torch.ones(3, 1)) and not torch.equal(new["h"], state["h"])
    assert len(extras) == 1 and extras[0].shape == (3, 1)
    with pytest.raises(ValueError, match="takes 2 inputs"):
        runner.start(src)
    lm = TinyRNN()
    with pytest.raises(ValueError, match="no encoder"):
        TorchRunner(lm, lm.graphs).start()
    orphan = GraphSpec("step", ["tokens: int64[batch]", "memory: float32[batch, 2]"], ["logits: float32[batch, 3]"],
                       role="step")
    with pytest.raises(ValueError, match="produced by no encoder"):
        TorchRunner(lm, [orphan])


# --- language models: warm-up on a prefix, then continue ------------------------------------------------------------

def book_predict(model: TinyRNN, prefix: list[int], num_preds: int) -> list[int]:
    """d2l §9.5.4's predict loop, one token at a time."""
    h, outputs = torch.zeros(1, model.W.shape[0]), [prefix[0]]
    with torch.no_grad():
        for i in range(len(prefix) + num_preds - 1):
            logits, h = model.step(torch.tensor([outputs[-1]]), h)
            outputs.append(prefix[i + 1] if i < len(prefix) - 1 else int(logits.argmax(-1)))
    return outputs[len(prefix):]


def test_continue_prefixes_is_the_books_predict_batched():
    model = TinyRNN(vocab=6, hidden=4, seed=2)
    runner = TorchRunner(model, model.graphs)
    prefixes = [[1, 2, 3, 4], [5], [2, 2], [3, 1, 4, 1, 5, 2]]
    expected = [book_predict(model, p, 10) for p in prefixes]
    assert continue_prefixes(runner, prefixes, 10) == expected
    assert [continue_prefixes(runner, [p], 10)[0] for p in prefixes] == expected
    beams = continue_prefixes(runner, prefixes, 6, beam_size=3)
    assert beams == [continue_prefixes(runner, [p], 6, beam_size=3)[0] for p in prefixes]
    assert all(len(b) == 6 for b in beams)
    assert continue_prefixes(runner, [], 5) == []
    with pytest.raises(ValueError, match="at least one token"):
        continue_prefixes(runner, [[1], []], 5)


# --- PyTorch and ONNX Runtime ------------------------------------------------------------------------------------------

def export_graphs(model: StepModel, folder) -> dict[str, object]:
    """Each graph of `model` to ``folder/<name>.onnx`` through the zoo's exporter (symbolic dims stay dynamic)."""
    return {g.name: export_graph(model, g, folder / g.file) and folder / g.file for g in model.graphs}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    models = {"book": BookTable(), "rnn": TinyRNN(vocab=6, hidden=4, seed=5), "seq2seq": TinySeq2Seq(seed=10)}
    return {key: (m, export_graphs(m, tmp_path_factory.mktemp(key))) for key, m in models.items()}


def runners(exported, key):
    model, files = exported[key]
    return TorchRunner(model, model.graphs), OnnxRunner(files, model.graphs)


@pytest.mark.parametrize("beam_size", [1, 2, 4])
def test_onnx_runtime_decodes_the_same_tokens_as_pytorch(exported, beam_size):
    torch_runner, onnx_runner = runners(exported, "seq2seq")
    g = torch.Generator().manual_seed(1)
    src, valid = torch.randint(1, 6, (9, 7), generator=g), torch.randint(1, 8, (9,), generator=g)
    first = torch.ones(9, dtype=torch.int64)
    results = []
    for runner in (torch_runner, onnx_runner):
        state = runner.start(src, valid)
        results.append(greedy(runner, state, first, 10, eos=0) if beam_size == 1 else
                       beam_search(runner, state, first, 10, beam_size, eos=0))
    assert results[0] == results[1]
    assert len({tuple(r) for r in results[0]}) > 2 and any(len(r) < 10 for r in results[0])

    book_torch, book_onnx = runners(exported, "book")
    for runner in (book_torch, book_onnx):
        found = beam_search(runner, runner.start(batch_size=1), torch.tensor([BOS]), 10, beam_size, eos=EOS)
        assert found == ([[A, B, C]] if beam_size == 1 else [[A, C, B]])

    lm_torch, lm_onnx = runners(exported, "rnn")
    prefixes = [[1, 2, 3], [4], [5, 5, 1, 2, 3, 0]]
    assert continue_prefixes(lm_torch, prefixes, 20, beam_size) == continue_prefixes(lm_onnx, prefixes, 20, beam_size)


def test_the_onnx_runner_steps_like_pytorch(exported):
    torch_runner, onnx_runner = runners(exported, "seq2seq")
    src, valid = torch.randint(0, 6, (5, 11)), torch.tensor([11, 3, 1, 7, 2])  # batch 5, seq 11: not traced
    a, b = torch_runner.start(src, valid), onnx_runner.start(src, valid)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4)
    tokens = torch.tensor([1, 2, 3, 4, 5])
    (la, sa, ea), (lb, sb, eb) = torch_runner.step(tokens, a), onnx_runner.step(tokens, b)
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(eb[0], ea[0], atol=1e-5, rtol=1e-4)
    assert sb.keys() == sa.keys() and onnx_runner.vocab_size == 6
    model, files = exported["seq2seq"]
    with pytest.raises(ValueError, match="no ONNX file"):
        OnnxRunner({"encoder": files["encoder"]}, model.graphs)
