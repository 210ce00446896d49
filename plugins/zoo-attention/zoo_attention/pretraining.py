"""Pretraining Transformers on The Time Machine's characters (d2l §11.9): a decoder-only causal language model
(`GPTMini`, GPT's recipe) and an encoder-only masked language model (`BERTMini`, BERT's).

Both are small stacks of the book's post-norm Transformer encoder block (`zoo_attention.blocks`, d2l §11.7) over
character embeddings plus the sinusoidal positional encoding (d2l §11.6.3): ``embedding(X) + P``. Their data are
chapter 9's windows (`zoo_core.data.TimeMachine`: 28 tokens, ``(X, Y)`` windows with Y = X shifted).

The embeddings are not scaled by sqrt(h) as the book's Transformer scales them (``embed_scale=True`` does): its
embeddings are ``nn.Embedding``'s N(0, 1), so at h = 64 each coordinate is ~8 against the positions' +-1, and the
model hardly sees where a character is. Measured on gpt-mini's book recipe (64 hidden, FFN 128, seed 0, one thread):
validation perplexity 8.72 after 12 epochs with the scaling (no dropout), 6.70 after 13 without; with dropout 0.1
and no scaling, 6.41 after 17 epochs.

`GPTMini` is a `zoo_rnn.lm.LanguageModel` (cross-entropy of every position against the next token, perplexity,
`predict`), trained with Adam: every block attends causally (position i sees positions <= i), so one forward pass
scores all the window's next tokens, as the RNNs' do. Its ``step`` graph carries every block's keys and values as
state (a KV cache, batch-major ``(batch, num_blks, heads, past, d)``) and puts the new token at position ``past``:
run from an empty cache, it gives the forward pass's logits position by position (tests/test_pretraining.py, on
PyTorch and ONNX Runtime), each step attending over the cache instead of recomputing the prefix
(benchmarks/kv_cache.py measures what that saves); `zoo_core.decoding.continue_prefixes` drives it (`predict`,
`zoo predict`), batching prefixes by length since the cache grows. The book preset trains on
32-character windows: positions past 31 are in the table (max_len 512) but were never trained on, so continuations
longer than the windows read them out of distribution (the KV benchmark's 300 positions time the graphs, nothing more).

`BERTMini` is a masked language model: 15% of the positions are chosen, of those 80% become the mask token, 10% a
random token, 10% stay (BERT's rule, d2l §15.8.5), and the loss is the cross-entropy at the chosen positions only.
The characters' vocabulary has no mask token: it is index ``vocab_size``, one extra row of the embedding (the
output layer still scores the ``vocab_size`` real tokens). Training draws the masks on the device from torch's
global generator, the whole batch at once; validation uses one fixed pattern (seeded, the same for every window of
a length), so its loss is deterministic and a window's loss does not depend on the batch it sits in. Its task,
``masked-language-modeling``, is not one `zoo predict` answers (it says so); `BERTMini.fill` fills ``_`` characters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_attention.blocks import PositionalEncoding, TransformerEncoderBlock
from zoo_attention.pretraining_graphs import bert_graphs, gpt_graphs
from zoo_core import GraphSpec, Model, ZooError
from zoo_rnn.lm import LanguageModel, is_char_vocab


class _Encoder(nn.Module):
    """Embeddings (times sqrt(h) with `scale`, the book's) plus sinusoidal positions, then `num_blks` post-norm
    encoder blocks (d2l §11.7.4).

    ``forward(X (b, n) int64, causal) -> (b, n, h)``; ``step(tokens (b,), K, V (b, num_blks, heads, past, d))``
    -> ``(outputs (b, h), K, V grown to past + 1)``: one new position ``past`` of the causal stack.
    """

    def __init__(self, num_embeddings: int, num_hiddens: int, ffn_num_hiddens: int, num_heads: int, num_blks: int,
                 dropout: float, max_len: int, scale: bool = False) -> None:
        super().__init__()
        self.num_hiddens, self.scale = num_hiddens, scale
        self.embedding = nn.Embedding(num_embeddings, num_hiddens)
        self.pos_encoding = PositionalEncoding(num_hiddens, dropout, max_len)
        self.blks = nn.ModuleList(TransformerEncoderBlock(num_hiddens, ffn_num_hiddens, num_heads, dropout)
                                  for _ in range(num_blks))

    def embed(self, X: Tensor, offset: int | torch.SymInt = 0) -> Tensor:
        """(b, n) -> (b, n, h): positions ``offset .. offset + n - 1``; past the table: ValueError."""
        X = self.embedding(X)
        return self.pos_encoding(X * math.sqrt(self.num_hiddens) if self.scale else X, offset)

    def forward(self, X: Tensor, causal: bool) -> Tensor:
        X = self.embed(X)
        for blk in self.blks:
            X = blk(X, causal=causal)
        return X

    def step(self, tokens: Tensor, K: Tensor, V: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        X = self.embed(tokens[:, None], K.shape[3])
        Ks, Vs = [], []
        for i, blk in enumerate(self.blks):
            X, K_i, V_i = blk.step(X, K[:, i], V[:, i])
            Ks.append(K_i)
            Vs.append(V_i)
        return X[:, 0], torch.stack(Ks, 1), torch.stack(Vs, 1)


def _adam(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, with its fused kernel where the parameters live on the CPU or CUDA (the same update, fewer passes)."""
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters())
    return torch.optim.Adam(model.parameters(), lr=lr, fused=fused)


# --- GPT ---------------------------------------------------------------------------------------------------------------

class GPTMini(LanguageModel):
    """A decoder-only causal Transformer language model (GPT; d2l §11.9.3) on characters.

    Args:
        vocab_size: tokens (the Time Machine's 28 characters).
        num_hiddens, ffn_num_hiddens, num_heads, num_blks, dropout: the encoder blocks' sizes (d2l §11.7).
        lr: Adam's learning rate.
        max_len: the positional table's length: the longest sequence the model reads, prefix and continuation
            together (a longer one is a `ValueError` in PyTorch and an index error in ONNX Runtime).
        embed_scale: multiply the embeddings by sqrt(num_hiddens) (the book's Transformer; see the module docstring).

    ``forward(X (batch, seq) int64) -> logits (batch, seq, vocab_size)``, causally masked in training and
    evaluation alike. State of the ``step`` graph: ``K``, ``V`` (batch, num_blks, heads, past, d), empty (past = 0)
    at the start (`begin_state`).
    """

    state_names = ("K", "V")

    def __init__(self, vocab_size: int = 28, num_hiddens: int = 64, ffn_num_hiddens: int = 128, num_heads: int = 4,
                 num_blks: int = 2, dropout: float = 0.1, lr: float = 0.003, max_len: int = 512,
                 embed_scale: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = _Encoder(vocab_size, num_hiddens, ffn_num_hiddens, num_heads, num_blks, dropout, max_len,
                                embed_scale)
        self.dense = nn.Linear(num_hiddens, vocab_size)

    def forward(self, X: Tensor) -> Tensor:
        return self.dense(self.encoder(X, causal=True))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _adam(self, self.lr)

    # --- the step graph ------------------------------------------------------------------------------------------
    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """The empty cache: K and V of shape (batch, num_blks, heads, 0, d)."""
        d = self.num_hiddens // self.num_heads
        empty = torch.zeros(batch_size, self.num_blks, self.num_heads, 0, d, device=device or self.device)
        return empty, empty.clone()

    def forward_step(self, tokens: Tensor, K: Tensor, V: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tokens (batch,) at position past = K.shape[3] -> (logits (batch, vocab_size), K, V with past + 1)."""
        X, K, V = self.encoder.step(tokens, K, V)
        return self.dense(X), K, V

    def graph_specs(self, forward: bool = True) -> tuple[GraphSpec, ...]:
        graphs = gpt_graphs(self.vocab_size, self.num_blks, self.num_heads, self.num_hiddens)
        return graphs if forward else graphs[1:]

    def graph_inputs(self, name: str, dims: Mapping[str, int]) -> tuple[Tensor, ...]:
        """``step``: random tokens (batch,) and a random cache (batch, num_blks, heads, past, d) ~ N(0, 1)."""
        if name == "step":
            device, d = self.device, self.num_hiddens // self.num_heads
            shape = (dims["batch"], self.num_blks, self.num_heads, dims["past"], d)
            return (torch.randint(0, self.vocab_size, (dims["batch"],), device=device),
                    torch.randn(shape, device=device), torch.randn(shape, device=device))
        return super().graph_inputs(name, dims)

    # --- generation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, prefix: str, num_preds: int, vocab: Any, beam: int = 1) -> str:  # type: ignore[override]
        """`LanguageModel.predict` (greedy or beam search over the cached step graph), after checking that the
        prefix and its continuation fit the positional table: they take ``len(prefix) + num_preds - 1`` positions
        (the last token is never read); more than ``max_len`` is a `ZooError`."""
        tokens = list(prefix) if is_char_vocab(vocab) else prefix.split()
        self.check_length(len(tokens), num_preds)
        return super().predict(prefix, num_preds, vocab, beam)

    def check_length(self, prefix_len: int, num_preds: int) -> None:
        used = prefix_len + max(num_preds, 1) - 1
        if used > self.max_len:
            raise ZooError(f"a prefix of {prefix_len} tokens continued by {num_preds} needs {used} positions; "
                           f"{type(self).__name__}'s positional table has {self.max_len} (max_len)")


# --- BERT --------------------------------------------------------------------------------------------------------------

class BERTMini(Model):
    """An encoder-only masked language model (BERT; d2l §11.9.2, §15.8) on characters.

    Args:
        vocab_size: tokens (the Time Machine's 28 characters); the mask token is index `vocab_size`.
        num_hiddens, ffn_num_hiddens, num_heads, num_blks, dropout: the encoder blocks' sizes (d2l §11.7).
        lr: Adam's learning rate.
        max_len: the positional table's length.
        mask_prob: the share of positions the loss is taken on (BERT: 15%).
        val_seed: the seed of validation's fixed masking pattern.
        embed_scale: multiply the embeddings by sqrt(num_hiddens) (the book's Transformer; see the module docstring).

    ``forward(X (batch, seq) int64, indices up to vocab_size) -> logits (batch, seq, vocab_size)``: every
    position's prediction, from both sides; the output layer is BERT's ``MaskLM`` head (dense, ReLU, LayerNorm,
    dense). Metrics: ``loss`` (cross-entropy at the chosen positions), ``acc`` (the share of chosen positions whose
    original token is the argmax), and the epoch's ``ppl`` = exp(loss).
    """

    unit = "tokens"
    metrics = ("loss", "acc")

    def __init__(self, vocab_size: int = 28, num_hiddens: int = 64, ffn_num_hiddens: int = 128, num_heads: int = 4,
                 num_blks: int = 2, dropout: float = 0.1, lr: float = 0.003, max_len: int = 512,
                 mask_prob: float = 0.15, val_seed: int = 0, embed_scale: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not 0 < mask_prob <= 1:
            raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
        self.mask_token = vocab_size
        self.encoder = _Encoder(vocab_size + 1, num_hiddens, ffn_num_hiddens, num_heads, num_blks, dropout, max_len,
                                embed_scale)
        self.mlm = nn.Sequential(nn.Linear(num_hiddens, num_hiddens), nn.ReLU(), nn.LayerNorm(num_hiddens),
                                 nn.Linear(num_hiddens, vocab_size))
        self._val_patterns: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}

    def forward(self, X: Tensor) -> Tensor:
        return self.mlm(self.encoder(X, causal=False))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _adam(self, self.lr)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.randint(0, self.vocab_size + 1, (batch_size, 8)),)

    def graph_specs(self) -> tuple[GraphSpec, ...]:
        return bert_graphs(self.vocab_size)

    def graph_inputs(self, name: str, dims: Mapping[str, int]) -> tuple[Tensor, ...]:
        if name == "model":  # tokens and mask tokens
            return (torch.randint(0, self.vocab_size + 1, (dims["batch"], dims["seq"]),
                                  device=next(self.parameters()).device),)
        return super().graph_inputs(name, dims)

    # --- masking -------------------------------------------------------------------------------------------------
    def corrupt(self, X: Tensor, chosen: Tensor, choice: Tensor, random_tokens: Tensor) -> Tensor:
        """BERT's corruption of the `chosen` positions: where ``choice < 0.8`` the mask token, where ``0.8 <=
        choice < 0.9`` `random_tokens`, else the token itself (all broadcast against X)."""
        replaced = torch.where(choice < 0.8, torch.full_like(X, self.mask_token),
                               torch.where(choice < 0.9, random_tokens, X))
        return torch.where(chosen, replaced, X)

    def random_masks(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Training's masking, one draw for the whole batch on X's device (torch's global generator): each position
        chosen with probability `mask_prob`. Returns (corrupted inputs, chosen (bool, X's shape))."""
        chosen = torch.rand(X.shape, device=X.device) < self.mask_prob
        choice = torch.rand(X.shape, device=X.device)
        random_tokens = torch.randint(0, self.vocab_size, X.shape, device=X.device)
        return self.corrupt(X, chosen, choice, random_tokens), chosen

    def fixed_masks(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Validation's masking: for windows of length n, ``max(1, round(mask_prob * n))`` positions drawn once from
        a generator seeded with `val_seed`, the same positions, corruption choice and random tokens for every
        window (consecutive windows are shifted by one character, so every character is chosen in some window).
        Deterministic, and a window's masks do not depend on its batch."""
        n = X.shape[1]
        key = (n, str(X.device))
        if key not in self._val_patterns:
            g = torch.Generator().manual_seed(self.val_seed)
            k = max(1, round(self.mask_prob * n))
            chosen = torch.zeros(n, dtype=torch.bool)
            chosen[torch.randperm(n, generator=g)[:k]] = True
            choice = torch.rand(n, generator=g)
            random_tokens = torch.randint(0, self.vocab_size, (n,), generator=g)
            self._val_patterns[key] = (chosen.to(X.device), torch.stack([choice, random_tokens.float()]).to(X.device))
        chosen, (choice, random_tokens) = self._val_patterns[key][0], self._val_patterns[key][1]
        chosen = chosen.expand_as(X)
        return self.corrupt(X, chosen, choice, random_tokens.long().expand_as(X)), chosen

    # --- training ------------------------------------------------------------------------------------------------
    def masked_step(self, X: Tensor, inputs: Tensor, chosen: Tensor) -> dict[str, Tensor]:
        """Loss and accuracy at the `chosen` positions of the corrupted `inputs`, against the original X."""
        logits = self(inputs)
        ce = F.cross_entropy(logits.reshape(-1, self.vocab_size), X.reshape(-1), reduction="none")
        weights = chosen.reshape(-1).to(ce.dtype)
        count = weights.sum().clamp(min=1)
        correct = (logits.argmax(-1).reshape(-1) == X.reshape(-1)).to(ce.dtype)
        return {"loss": (ce * weights).sum() / count, "acc": (correct * weights).sum() / count}

    def training_step(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        X = batch[0]
        return self.masked_step(X, *self.random_masks(X))

    def validation_step(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        X = batch[0]
        return self.masked_step(X, *self.fixed_masks(X))

    def step(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        return self.validation_step(batch)

    def batch_weight(self, batch: Sequence[Tensor]) -> int:
        """The window's tokens: speed is in tokens, and validation chooses as many positions in every window."""
        return batch[0].numel()

    def epoch_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Adds ``ppl`` = exp(loss), the perplexity at the masked positions."""
        if "loss" not in means:
            return means
        return {**means, "ppl": math.exp(means["loss"]) if means["loss"] < 709 else math.inf}

    # --- use -----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def fill(self, text: str, vocab: Any, blank: str = "_") -> str:
        """`text` with every `blank` character replaced by the model's most likely character there (``<unk>``
        excluded), all blanks read as mask tokens in one forward pass. A text without blanks comes back as is."""
        if not text:
            raise ZooError("nothing to fill: the text is empty")
        if len(text) > self.max_len:
            raise ZooError(f"a text of {len(text)} characters is longer than {type(self).__name__}'s positional "
                           f"table ({self.max_len}, max_len)")
        ids = [self.mask_token if c == blank else vocab[c] for c in text]
        was_training = self.training
        self.eval()
        try:
            logits = self(torch.tensor([ids], device=next(self.parameters()).device))[0]
        finally:
            self.train(was_training)
        logits[:, vocab.unk] = -math.inf
        best = logits.argmax(-1).tolist()
        return "".join(vocab.to_tokens(best[i]) if c == blank else c for i, c in enumerate(text))


__all__ = ["BERTMini", "GPTMini"]
