"""gpt-mini and bert-mini (d2l §11.9): the KV-cached step against the causal forward pass (PyTorch and ONNX Runtime),
cached generation against generation without a cache, the positional table's limit, BERT's masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo_attention.pretraining import BERTMini, GPTMini
from zoo_core import ZooError
from zoo_core.decoding import OnnxRunner, TorchRunner, continue_prefixes
from zoo_core.onnx_export import export_graph
from zoo_core.text import Vocab

V = 28


def gpt(**kw) -> GPTMini:
    torch.manual_seed(0)
    return GPTMini(**{"num_hiddens": 16, "ffn_num_hiddens": 32, "num_heads": 2, "max_len": 64, **kw}).eval()


def stepwise(model: GPTMini, X: torch.Tensor) -> torch.Tensor:
    """Logits of every position of X from the step graph, one token at a time from the empty cache."""
    K, Vc = model.begin_state(len(X))
    out = []
    with torch.no_grad():
        for t in range(X.shape[1]):
            logits, K, Vc = model.forward_step(X[:, t], K, Vc)
            out.append(logits)
    return torch.stack(out, 1)


@pytest.mark.parametrize("num_blks", [1, 3])
def test_cached_step_gives_the_causal_forward_pass_at_every_position(num_blks):
    model = gpt(num_blks=num_blks)
    X = torch.randint(0, V, (3, 13))
    with torch.no_grad():
        full = model(X)
    torch.testing.assert_close(stepwise(model, X), full, atol=1e-5, rtol=1e-5)


def test_forward_is_causal():
    """A position's logits do not change when a later token does (so the loss is a next-token loss)."""
    model = gpt()
    X = torch.randint(0, V, (2, 10))
    Y = X.clone()
    Y[:, 6] = (Y[:, 6] + 1) % V
    with torch.no_grad():
        a, b = model(X), model(Y)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_cached_step_on_onnx_runtime_from_an_empty_cache(tmp_path):
    """Both graphs exported: ONNX Runtime's step graph, driven from past = 0 (the empty cache the decoding loop
    starts from; export traced past = 3), gives the forward graph's logits at every position, as PyTorch does."""
    import onnxruntime as ort

    model = gpt()
    forward_graph, step_graph = model.graph_specs()
    for g in (forward_graph, step_graph):
        export_graph(model, g, tmp_path / g.file)
    X = torch.randint(0, V, (3, 11))
    with torch.no_grad():
        expected = model(X).numpy()
    fwd = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(fwd.run(None, {"X": X.numpy()})[0], expected, atol=1e-5, rtol=1e-5)
    step = ort.InferenceSession(str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"])
    K, Vc = (t.numpy() for t in model.begin_state(3))
    assert K.shape[3] == 0
    out = []
    for t in range(X.shape[1]):
        logits, K, Vc = step.run(None, {"tokens": X[:, t].numpy(), "K": K, "V": Vc})
        out.append(logits)
        assert K.shape[3] == t + 1
    np.testing.assert_allclose(np.stack(out, 1), expected, atol=1e-5, rtol=1e-5)


def test_a_sequence_longer_than_the_positional_table_is_an_error(tmp_path):
    import onnxruntime as ort

    model = gpt(max_len=16)
    vocab = Vocab(list("abcdefghijklmnopqrstuvwxyz "))
    with pytest.raises(ValueError, match="longer than the positional encoding's table"):
        model(torch.zeros(1, 17, dtype=torch.int64))
    K = torch.zeros(1, 2, 2, 16, 8)
    with pytest.raises(ValueError, match="positional"):
        model.forward_step(torch.zeros(1, dtype=torch.int64), K, K)
    with pytest.raises(ZooError, match="positional table has 16"):
        model.predict("the time traveller", 5, vocab)
    with pytest.raises(ZooError, match="positional table has 16"):
        model.predict("abcdefgh", 10, vocab)
    assert len(model.predict("abcdefgh", 9, vocab)) == 17  # 16 positions: the last token is never read
    step_graph = model.graph_specs()[1]
    export_graph(model, step_graph, tmp_path / "step.onnx")
    session = ort.InferenceSession(str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"])
    ok = session.run(None, {"tokens": np.zeros(1, np.int64), "K": K[:, :, :, :15].numpy(),
                            "V": K[:, :, :, :15].numpy()})
    assert ok[1].shape[3] == 16
    with pytest.raises(Exception, match="(?i)index|indices|out of"):  # position 16 of a 16-row table
        session.run(None, {"tokens": np.zeros(1, np.int64), "K": K.numpy(), "V": K.numpy()})


def uncached_greedy(model: GPTMini, prefix: list[int], num_preds: int) -> list[int]:
    """Greedy continuation re-running the whole sequence through the forward pass at each step (no cache)."""
    seq = list(prefix)
    with torch.no_grad():
        for _ in range(num_preds):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prefix):]


def test_cached_generation_equals_generation_without_a_cache():
    """zoo_core's continue_prefixes through the growing cache (prefixes of several lengths in one call) gives the
    tokens of greedy decoding that re-reads the whole sequence at every step."""
    model = gpt()
    prefixes = [[3, 1, 4, 1, 5], [2, 7], [9, 2, 6, 5, 3], [1]]
    found = continue_prefixes(TorchRunner(model, model.graph_specs()), prefixes, 12)
    assert found == [uncached_greedy(model, p, 12) for p in prefixes]
    # beam 1 is greedy; a wider beam returns num_preds tokens for every prefix, prefixes of any length mixed
    assert continue_prefixes(TorchRunner(model, model.graph_specs()), prefixes, 12, beam_size=1) == found
    beams = continue_prefixes(TorchRunner(model, model.graph_specs()), prefixes, 12, beam_size=3)
    assert [len(b) for b in beams] == [12] * 4


def test_onnx_generation_matches_pytorch(tmp_path):
    model = gpt()
    graphs = model.graph_specs()
    export_graph(model, graphs[1], tmp_path / "step.onnx")
    prefixes = [[3, 1, 4, 1, 5], [2, 7], [9, 2, 6, 5, 3]]
    for beam in (1, 3):
        torch_tokens = continue_prefixes(TorchRunner(model, graphs), prefixes, 15, beam)
        onnx_tokens = continue_prefixes(OnnxRunner({"step": tmp_path / "step.onnx"}, graphs), prefixes, 15, beam)
        assert torch_tokens == onnx_tokens


def test_predict_continues_the_prefix():
    model = gpt()
    vocab = Vocab(list("the quick brown fox jumps over a lazy dog"))
    text = model.predict("time ", 10, vocab)
    assert text.startswith("time ") and len(text) == 15
    with pytest.raises(ZooError, match="empty"):
        model.predict("", 3, vocab)


# --- BERT ----------------------------------------------------------------------------------------------------------

def bert(**kw) -> BERTMini:
    torch.manual_seed(0)
    return BERTMini(**{"num_hiddens": 16, "ffn_num_hiddens": 32, "num_heads": 2, "max_len": 64, **kw})


def test_mask_token_is_one_extra_embedding_row_and_not_an_output():
    model = bert()
    assert model.mask_token == V
    assert model.encoder.embedding.num_embeddings == V + 1
    with torch.no_grad():
        out = model.eval()(torch.full((2, 5), V))
    assert out.shape == (2, 5, V)


def test_training_masks_follow_berts_rule():
    """Drawn on the device for the whole batch: ~15% of positions chosen; of those ~80% mask token, ~10% a random
    token, ~10% unchanged; positions not chosen are never changed."""
    model = bert()
    torch.manual_seed(1)
    X = torch.randint(0, V, (512, 64))
    inputs, chosen = model.random_masks(X)
    n = chosen.sum().item()
    assert abs(n / X.numel() - 0.15) < 0.01
    assert torch.equal(inputs[~chosen], X[~chosen])
    masked = (inputs[chosen] == V).float().mean().item()
    kept = (inputs[chosen] == X[chosen]).float().mean().item()  # 10% kept, plus random draws of the same token
    assert abs(masked - 0.8) < 0.02
    assert abs(kept - (0.1 + 0.1 / V)) < 0.02
    assert (inputs < V + 1).all() and (inputs[chosen & (inputs != V)] < V).all()


def test_loss_is_taken_at_the_chosen_positions_only():
    model = bert().eval()
    X = torch.randint(0, V, (4, 12))
    inputs, chosen = model.fixed_masks(X)
    with torch.no_grad():
        out = model.masked_step(X, inputs, chosen)
        logits = model(inputs)
    expected = torch.nn.functional.cross_entropy(logits[chosen], X[chosen])
    torch.testing.assert_close(out["loss"], expected)
    acc = (logits[chosen].argmax(-1) == X[chosen]).float().mean()
    torch.testing.assert_close(out["acc"], acc)


def test_validation_masks_are_fixed_and_independent_of_the_batch():
    model = bert().eval()
    X = torch.randint(0, V, (6, 32))
    a_inputs, a_chosen = model.fixed_masks(X)
    torch.manual_seed(123)  # the global generator does not matter
    b_inputs, b_chosen = model.fixed_masks(X)
    assert torch.equal(a_inputs, b_inputs) and torch.equal(a_chosen, b_chosen)
    one_inputs, one_chosen = model.fixed_masks(X[2:3])
    assert torch.equal(one_inputs, a_inputs[2:3]) and torch.equal(one_chosen, a_chosen[2:3])
    assert a_chosen.sum(1).tolist() == [5] * 6  # round(0.15 * 32) positions in every window
    with torch.no_grad():
        first = model.validation_step((X, X))
        second = model.validation_step((X, X))
    assert first["loss"].item() == second["loss"].item()
    # a fresh model with another val_seed masks other positions
    assert not torch.equal(bert(val_seed=1).fixed_masks(X)[1], a_chosen)


def test_fill_replaces_the_blanks_only():
    model = bert()
    vocab = Vocab(list("the quick brown fox jumps over a lazy dog"))
    text = "the t_me tr_veller"
    filled = model.fill(text, vocab)
    assert len(filled) == len(text) and "_" not in filled
    assert [c for c, o in zip(filled, text) if o != "_"] == [c for c in text if c != "_"]
    assert all(c in vocab.idx_to_token and c != "<unk>" for c in filled)
    assert model.fill("no blanks", vocab) == "no blanks"
    with pytest.raises(ZooError, match="positional table"):
        model.fill("_" * 65, vocab)
