"""The graphs of `gpt-mini` and `bert-mini` (`zoo_core.GraphSpec`), declared without torch so that plugin.py and
the models (`zoo_attention.pretraining`) share one declaration.

- ``gpt_graphs``: ``model`` (``X: int64[batch, seq] -> logits: float32[batch, seq, V]``, the causal forward pass over
  the whole sequence, positions 0 .. seq - 1) and ``step`` (role ``step``): ``tokens: int64[batch]`` and every
  block's self-attention keys and values ``K``, ``V: float32[batch, num_blks, heads, past, d]`` (batch-major, the
  cache of the ``past`` earlier positions; ``zoo_core.decoding`` starts it empty, ``past`` = 0) -> next-token
  ``logits: float32[batch, V]`` and the grown cache ``K_next``, ``V_next`` (``past + 1`` positions); the token sits
  at position ``past``.
- ``bert_graphs``: ``model`` (``X: int64[batch, seq] -> logits: float32[batch, seq, V]``): every position's
  distribution over the vocabulary, bidirectional (the mask token is index ``V``, one past the vocabulary).
"""

from __future__ import annotations

from zoo_core import GraphSpec


def gpt_graphs(vocab_size: int, num_blks: int, num_heads: int, num_hiddens: int) -> tuple[GraphSpec, GraphSpec]:
    d = num_hiddens // num_heads
    cache = [f"{n}: float32[batch, {num_blks}, {num_heads}, past, {d}]" for n in ("K", "V")]
    grown = [f"{n}_next: float32[batch, {num_blks}, {num_heads}, past_next, {d}]" for n in ("K", "V")]
    model = GraphSpec("model", ("X: int64[batch, seq]",), (f"logits: float32[batch, seq, {vocab_size}]",),
                      summary="the causal forward pass over the whole sequence, positions 0 .. seq - 1 (training, "
                              "scoring; the uncached baseline of benchmarks/kv_cache.py)")
    step = GraphSpec("step", ("tokens: int64[batch]", *cache), (f"logits: float32[batch, {vocab_size}]", *grown),
                     role="step", state=("K", "V"),
                     summary="one token at position past with every block's key/value cache of the past positions "
                             "(empty at the start): next-token logits and the cache grown by one position")
    return model, step


def bert_graphs(vocab_size: int) -> tuple[GraphSpec]:
    return (GraphSpec("model", ("X: int64[batch, seq]",), (f"logits: float32[batch, seq, {vocab_size}]",),
                      summary=f"every position's logits over the {vocab_size} tokens, bidirectional; index "
                              f"{vocab_size} of X is the mask token"),)


__all__ = ["bert_graphs", "gpt_graphs"]
