"""The Transformer encoder-decoder (d2l §11.7, Vaswani et al. 2017): English-French translation, post-norm.

The book's model: the encoder embeds the source (the embeddings scaled by sqrt(num_hiddens), so that they are not
drowned by the positional encoding, whose values lie in [-1, 1]), adds the sinusoidal positional encoding, and runs
``num_blks`` encoder blocks (multi-head self-attention masked to the source's valid length, add & norm, position-wise
FFN, add & norm); the decoder embeds the target the same way and runs ``num_blks`` decoder blocks (causal
self-attention, attention over the encoder's outputs, FFN, each followed by add & norm); a dense layer maps to the
target vocabulary. The blocks are `zoo_attention.blocks`'. Init: the book's Transformer applies no init of its own
(its ``Seq2Seq`` and both halves leave PyTorch's defaults: ``nn.Linear``'s Kaiming-uniform, ``nn.Embedding``'s
N(0, 1)), and neither does this one.

Two faults of the book's code (d2l 1.0.3, ``TransformerDecoderBlock``) are fixed rather than copied (DESIGN §7):

- **the causal mask in evaluation**: the book builds ``dec_valid_lens`` only ``if self.training``; in evaluation its
  decoder's self-attention sees the whole target, so each position attends to the very token it is asked to predict,
  and the validation loss it reports is not a next-token loss. Here the decoder masks causally in training and
  evaluation alike. `Transformer.leaky_validation_loss` computes the book's figure the book's way, for comparison.
- **positions in step-by-step decoding**: the book's decoder calls ``pos_encoding`` on the one new token, which adds
  the table's row 0 to every token it generates, though training put token t at position t. Here a decoding step
  adds position ``past`` (the cache's length), so the cached decoder gives, position by position, the logits of the
  full causal forward pass.

Graphs (every tensor batch-major, so that beam search can reorder rows; d = num_hiddens / num_heads):

- ``model``: the teacher-forced forward pass ``(src, tgt_in, src_valid_len) -> logits (batch, tgt_seq, V)``.
- ``encoder``: ``(src (batch, src_seq), src_valid_len (batch,)) -> cross_K, cross_V (batch, num_blks, heads, src_seq,
  d), cross_bias (batch, 1, 1, src_seq)``: each decoder block's cross-attention keys and values, projected once per
  sentence, and the additive mask of the source's padding (0 kept, -1e6 masked).
- ``decoder_step``: ``(tokens (batch,), cross_K, cross_V, cross_bias, K, V (batch, num_blks, heads, past, d)) ->
  (logits (batch, V), K_next, V_next (batch, num_blks, heads, past + 1, d))``: one token through the decoder with a
  key/value cache of every block's self-attention. ``K`` and ``V`` are the state; decoding starts from an empty cache
  (``past`` = 0, the zeros `zoo_core.decoding` gives a state no encoder produces) and the new token's position is
  ``past``. The export traces ``past`` >= 2; ONNX Runtime runs the graph at ``past`` = 0 (a test holds it).
- ``decoder_prefix`` (not exported by ``zoo export``; `prefix_graph`): the decoder without a cache, ``(tgt (batch, t),
  cross_K, cross_V, cross_bias) -> logits (batch, V)`` of the last position, for measuring what the cache saves.

Training on the CPU takes a faster road to the same loss (`Transformer.packed_loss`, used by `training_step`; the
validation loss and every graph use the forward pass): the batch is cut to its longest source and its longest target
(up to the last label), and every position-wise computation (the embeddings, the projections, the FFNs, the layer
norms, the output layer and the loss) runs on the positions that matter only, packed into one (tokens, num_hiddens)
matrix: the valid source positions, and the target positions up to each row's last label. Attention scatters them
into padded (batch * heads, steps, d) tensors (`_heads_first`) for `_Attention` (its backward written out). Padded
source positions are masked out of every attention that could read them and a causal decoder position never sees a
later one, so the loss and its gradients are those of the forward pass (a test holds them equal); only dropout draws
its masks in another order (and `_dropout_mask`'s way). Under ``--precision bf16`` (CPU autocast) the packed path runs
too: the products take bf16 operands and `_Attention`'s softmax stays float32, as under autocast's own forward pass
(a test holds the gradients as close to float32's as that pass's). On a CPU with AVX512-BF16 (AMD Zen 4 here), bf16
products run at about twice float32's rate (the book's shapes: 176-212 against 88-99 GFLOP/s, one thread), and a
training step takes about 66 instead of 92 ms of CPU time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_attention.blocks import (
    MultiHeadAttention, PositionalEncoding, TransformerDecoderBlock, TransformerEncoderBlock, attention_bias,
)
from zoo_core import GraphSpec
from zoo_modern_rnn.encoder_decoder import (
    Decoder, Encoder, EncoderDecoder, dims_or, random_tokens, random_valid_lens,
)

NUM_STEPS = 9  # the book's sentence length (FraEng num_steps): the default size of example inputs
PREFIX_GRAPH = "decoder_prefix"  # the uncached decoder (`TransformerDecoderPrefix`): benchmarks and tests only

Cache = list[tuple[Tensor, Tensor]]
"""Each decoder block's self-attention keys and values, (batch, heads, past, d) each."""


class TransformerEncoder(Encoder):
    """The Transformer encoder (d2l §11.7.4): scaled embedding + positional encoding, then `num_blks` encoder blocks.

    ``forward(X (batch, m), valid_lens (batch,)) -> (batch, m, num_hiddens)``. ``max_len`` is the positional
    table's length: a longer source is a ValueError.
    """

    def __init__(self, vocab_size: int, num_hiddens: int, ffn_num_hiddens: int, num_heads: int, num_blks: int,
                 dropout: float, use_bias: bool = False, max_len: int = 1000) -> None:
        super().__init__()
        self.num_hiddens = num_hiddens
        self.embedding = nn.Embedding(vocab_size, num_hiddens)
        self.pos_encoding = PositionalEncoding(num_hiddens, dropout, max_len)
        self.blks = nn.ModuleList(TransformerEncoderBlock(num_hiddens, ffn_num_hiddens, num_heads, dropout, use_bias)
                                  for _ in range(num_blks))

    def forward(self, X: Tensor, valid_lens: Tensor, *args: Tensor) -> Tensor:
        X = self.pos_encoding(self.embedding(X) * math.sqrt(self.num_hiddens))
        for blk in self.blks:
            X = blk(X, valid_lens)
        return X


class TransformerDecoder(Decoder):
    """The Transformer decoder (d2l §11.7.5): scaled embedding + positional encoding, `num_blks` decoder blocks, a
    dense layer to the vocabulary.

    The state is ``[enc_outputs (batch, m, h), enc_valid_lens (batch,), cache]``. With ``cache`` None (what
    `init_state` gives) ``forward`` is teacher forcing: the whole target at once, causally masked, positions from 0.
    With a cache (`empty_cache`, then what ``forward`` returns), it is step-by-step decoding: the new tokens take
    positions ``past, past + 1, ...`` (past = the cache's length) and attend to the cache and to themselves; the
    returned state holds the grown cache. Both give the same logits position by position.
    """

    def __init__(self, vocab_size: int, num_hiddens: int, ffn_num_hiddens: int, num_heads: int, num_blks: int,
                 dropout: float, max_len: int = 1000) -> None:
        super().__init__()
        self.num_hiddens, self.num_heads = num_hiddens, num_heads
        self.embedding = nn.Embedding(vocab_size, num_hiddens)
        self.pos_encoding = PositionalEncoding(num_hiddens, dropout, max_len)
        self.blks = nn.ModuleList(TransformerDecoderBlock(num_hiddens, ffn_num_hiddens, num_heads, dropout)
                                  for _ in range(num_blks))
        self.dense = nn.Linear(num_hiddens, vocab_size)

    @staticmethod
    def init_state(enc_outputs: Tensor, enc_valid_lens: Tensor | None = None, *args: Tensor) -> list:
        return [enc_outputs, enc_valid_lens, None]

    def empty_cache(self, batch_size: int, device: torch.device | str = "cpu") -> Cache:
        """A cache of length 0 for each block: where step-by-step decoding starts."""
        d = self.num_hiddens // self.num_heads
        empty = torch.zeros(batch_size, self.num_heads, 0, d, device=device)
        return [(empty, empty) for _ in self.blks]

    def embed(self, X: Tensor, offset: int = 0) -> Tensor:
        """Scaled embeddings plus positions ``offset, offset + 1, ...``: (batch, n) -> (batch, n, h)."""
        return self.pos_encoding(self.embedding(X) * math.sqrt(self.num_hiddens), offset)

    def forward(self, X: Tensor, state: list) -> tuple[Tensor, list]:
        enc_outputs, enc_valid_lens, cache = state
        if cache is None:
            X = self.embed(X)
            for blk in self.blks:
                X = blk(X, enc_outputs, enc_valid_lens)
            return self.dense(X), state
        X = self.embed(X, cache[0][0].shape[2])
        cross_bias = attention_bias(enc_valid_lens, 1, enc_outputs.shape[1], dtype=X.dtype, device=X.device)
        new_cache = []
        for blk, (past_k, past_v) in zip(self.blks, cache):
            cross_k, cross_v = blk.cross_kv(enc_outputs)
            X, K, V = blk.step(X, past_k, past_v, cross_k, cross_v, cross_bias)
            new_cache.append((K, V))
        return self.dense(X), [enc_outputs, enc_valid_lens, new_cache]


class TransformerEncoderGraph(nn.Module):
    """The ``encoder`` graph: ``(src, src_valid_len) -> (cross_K, cross_V (batch, num_blks, heads, src_seq, d),
    cross_bias (batch, 1, 1, src_seq))``."""

    def __init__(self, encoder: TransformerEncoder, decoder: TransformerDecoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder  # the decoder's cross-attention W_k, W_v: once per sentence

    def forward(self, src: Tensor, src_valid_len: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        enc_outputs = self.encoder(src, src_valid_len)
        kv = [blk.cross_kv(enc_outputs) for blk in self.decoder.blks]
        bias = attention_bias(src_valid_len, 1, src.shape[1], dtype=enc_outputs.dtype)
        return torch.stack([k for k, _ in kv], 1), torch.stack([v for _, v in kv], 1), bias


class TransformerDecoderStep(nn.Module):
    """The ``decoder_step`` graph: ``(tokens (batch,), cross_K, cross_V, cross_bias, K, V) -> (logits (batch, V),
    K_next, V_next)``, the self-attention caches (batch, num_blks, heads, past, d) grown by one position; the token
    sits at position ``past``."""

    def __init__(self, decoder: TransformerDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: Tensor, cross_K: Tensor, cross_V: Tensor, cross_bias: Tensor, K: Tensor,
                V: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        X = self.decoder.embed(tokens[:, None], K.shape[3])
        Ks, Vs = [], []
        for i, blk in enumerate(self.decoder.blks):
            X, K_i, V_i = blk.step(X, K[:, i], V[:, i], cross_K[:, i], cross_V[:, i], cross_bias)
            Ks.append(K_i)
            Vs.append(V_i)
        return self.decoder.dense(X[:, 0]), torch.stack(Ks, 1), torch.stack(Vs, 1)


class TransformerDecoderPrefix(nn.Module):
    """An uncached decoder, for comparison with the cached step (not exported by `zoo export`): ``(tgt (batch, t),
    cross_K, cross_V, cross_bias) -> logits (batch, V)`` of the last position, the whole prefix run through the
    decoder again (what decoding costs without a key/value cache: the step graph does the same with one position)."""

    def __init__(self, decoder: TransformerDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, tgt: Tensor, cross_K: Tensor, cross_V: Tensor, cross_bias: Tensor) -> Tensor:
        X = self.decoder.embed(tgt)
        for i, blk in enumerate(self.decoder.blks):
            Y = blk.addnorm1(X, blk.attention1(X, X, X, causal=True))
            Q = blk.attention2.split_heads(blk.attention2.W_q(Y))
            Z = blk.addnorm2(Y, blk.attention2.attend(Q, cross_K[:, i], cross_V[:, i], cross_bias))
            X = blk.addnorm3(Z, blk.ffn(Z))
        return self.decoder.dense(X[:, -1])


def prefix_graph(model: Transformer) -> GraphSpec:
    """The `GraphSpec` of `model`'s uncached ``decoder_prefix`` graph (export it with
    `zoo_core.onnx_export.export_graph`): the cached step's inputs, the target prefix instead of one token and the
    cache."""
    d, blks, heads = model.num_hiddens // model.num_heads, model.num_blks, model.num_heads
    memory = [f"cross_{n}: float32[batch, {blks}, {heads}, src_seq, {d}]" for n in ("K", "V")]
    return GraphSpec(PREFIX_GRAPH, ("tgt: int64[batch, tgt_seq]", *memory, "cross_bias: float32[batch, 1, 1, src_seq]"),
                     (f"logits: float32[batch, {model.tgt_vocab_size}]",),
                     summary="the decoder over the whole prefix, uncached: the last position's logits")


def _dropout_mask(shape: tuple[int, ...], p: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Dropout's mask for a tensor of `shape` (0 < p < 1): 1 / (1 - p) where an element is kept, with probability
    1 - p, else 0.

    The mask compares 16 uniform random bits per element with ``round(p * 2^16)``, so an element is dropped with
    probability p to within 2^-17 (0.2 becomes 0.199997). Why not ``nn.Dropout``: on the CPU, drawing random numbers
    is most of dropout's cost, and one 64-bit draw here serves four elements: for a 137,000-element mask (the book
    Transformer's), 140 us against 345 us for 31-bit integers, one an element, and 1,180 us for ``bernoulli_``. The
    comparison writes 0/1 into the 16-bit fields in place, which convert to floats in one vectorised pass (a boolean
    mask's conversion is not vectorised: 82 against 12 us). With the packed embeddings, 4% off a training step."""
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2 ** 63, None)  # all 64 bits
    keep = bits.view(torch.int16)[:n].ge_(round(p * 2 ** 16) - 2 ** 15)  # 1 with probability 1 - p, else 0
    return keep.view(shape).to(dtype).mul_(1 / (1 - p))


def _dropout(X: Tensor, p: float) -> Tensor:
    """Dropout (``F.dropout`` in training mode; p = 0 is the identity) with `_dropout_mask`'s mask."""
    if p == 0:
        return X
    return X * _dropout_mask(X.shape, p, X.dtype, X.device)


def _embed_packed(embedding: nn.Embedding, pos_encoding: PositionalEncoding, tokens: Tensor, index: Tensor,
                  p: float) -> Tensor:
    """The encoder's or decoder's input (scaled embedding + positional encoding, then dropout) at the flattened
    positions `index` of `tokens` (batch, steps) only: (N, h), the rows `_pack` would take from the padded input."""
    steps, h = tokens.shape[1], embedding.embedding_dim
    X = embedding(tokens.reshape(-1).index_select(0, index)) * math.sqrt(h)
    return _dropout(X + pos_encoding.P[0].index_select(0, index % steps), p)


def _add_norm(add_norm: nn.Module, X: Tensor, Y: Tensor, p: float) -> Tensor:
    """`zoo_attention.blocks.AddNorm`'s ``LayerNorm(dropout(Y) + X)`` with `_dropout`."""
    ln = add_norm.ln
    return F.layer_norm(_dropout(Y, p) + X, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


class _Attention(torch.autograd.Function):
    """Scaled dot-product attention with dropout on its weights, every head at once, the backward pass written out:
    the core of `_packed_attention`.

    ``Q`` (B, q, d), ``K`` and ``V`` (B, k, d), contiguous (B = batch * heads); ``bias`` (B|1, q|1, k), the additive
    mask (`zoo_attention.blocks.attention_bias`'s, a constant); ``p`` the dropout on the weights -> (B, q, d)::

        A = softmax(Q K^T / sqrt(d) + bias);   out = dropout(A) V

    Why not autograd over ``F.softmax`` and ``@``: the book's rows are short (q, k <= 9), and ATen's softmax kernel,
    vectorised along a row, spends 19 ns an element on rows of seven; exp and sums over the whole tensor spend 4 ns
    (a (512, 7, 7) tensor: 467 against 98 us). Autograd's matrix products of the (b, heads, steps, d) views copy
    them, and its gradient of the split heads is a concatenation of transposed views, ATen's slow case. Here the
    heads come in contiguous (`_heads_first` scatters the packed rows straight into place), the scale and the mask go
    into one ``baddbmm``, and the backward is four ``bmm`` and three elementwise passes. The book Transformer's
    training steps, 30 epochs, one thread, on a 2-core AMD EPYC with AVX-512, three rounds alternating: 12.2-12.5 s
    with autograd over padded (batch, heads, steps, d) views against 11.3-11.9 s with this Function; then 10.8-11.5 s
    against 10.6-10.8 s with the scatter, and 11.1 s against 10.4-10.9 s with the scatter done in place.
    """

    @staticmethod
    def forward(ctx, Q: Tensor, K: Tensor, V: Tensor, bias: Tensor, p: float) -> Tensor:  # type: ignore[override]
        scale = 1 / math.sqrt(Q.shape[-1])
        # under bf16 autocast the products take bf16 operands and the softmax runs in float32, as autocast's own
        # softmax does; in float32 (or 64) every cast here is a no-op
        softmax_dtype = torch.promote_types(Q.dtype, torch.float32)
        S = torch.baddbmm(bias.to(Q.dtype), Q, K.transpose(1, 2), alpha=scale).to(softmax_dtype)  # (B, q, k)
        A = S.sub_(S.amax(-1, keepdim=True)).exp_()                                 # softmax: -1e6 + max -> 0
        A.div_(A.sum(-1, keepdim=True))
        D = _dropout_mask(A.shape, p, A.dtype, A.device) if p > 0 else None
        AD = (A * D if D is not None else A).to(V.dtype)
        ctx.scale = scale
        ctx.save_for_backward(Q, K, V, A, D, AD)
        return torch.bmm(AD, V)

    @staticmethod
    def backward(ctx, d_out: Tensor):  # type: ignore[override]
        Q, K, V, A, D, AD = ctx.saved_tensors
        d_out = d_out.contiguous().to(V.dtype)
        d_V = torch.bmm(AD.transpose(1, 2), d_out)
        d_A = torch.bmm(d_out, V.transpose(1, 2)).to(A.dtype)                       # through dropout(A) ...
        if D is not None:
            d_A.mul_(D)                                                             # ... to A
        d_S = d_A.sub_((d_A * A).sum(-1, keepdim=True)).mul_(A).mul_(ctx.scale)    # softmax, then the scale
        d_S = d_S.to(Q.dtype)
        return torch.bmm(d_S, K), torch.bmm(d_S.transpose(1, 2), Q), d_V, None, None


def _head_rows(index: Tensor, parts: int, num_heads: int, shape: tuple[int, int]) -> Tensor:
    """Where packed rows go in padded, heads-first tensors: for the packed position i at flattened position
    ``index[i] = b * steps + t`` of a (batch, steps) `shape`, the row ``((p * batch + b) * heads + j) * steps + t`` of
    a (parts * batch * heads * steps, d) buffer holds part p (Q, K or V), head j; (N * parts * heads,), in the order
    of a packed (N, parts * h) matrix's (N * parts * heads, d) rows."""
    batch, steps = shape
    b, t = index.div(steps, rounding_mode="floor"), index.remainder(steps)
    p = torch.arange(parts, device=index.device)[None, :, None]
    j = torch.arange(num_heads, device=index.device)[None, None, :]
    return (((p * batch + b[:, None, None]) * num_heads + j) * steps + t[:, None, None]).view(-1)


def _heads_first(rows: Tensor, parts: int, num_heads: int, index: Tensor, shape: tuple[int, int]
                 ) -> tuple[Tensor, ...]:
    """Packed rows (N, parts * h), `parts` projections side by side (Q, K, V), at the flattened positions `index` of
    a (batch, steps) `shape` -> `parts` contiguous (batch * heads, steps, d) tensors, zero at the other positions
    (the padding: finite, so that masked scores and their gradients stay 0), in one scatter."""
    batch, steps = shape
    d = rows.shape[1] // (parts * num_heads)
    out = rows.new_zeros(parts * batch * num_heads * steps, d)
    out.index_copy_(0, _head_rows(index, parts, num_heads, shape), rows.reshape(-1, d))  # in place: no clone
    return out.view(parts, batch * num_heads, steps, d).unbind(0)


def _packed_attention(attention: MultiHeadAttention, queries: Tensor, keys: Tensor, q_index: Tensor,
                      k_index: Tensor, q_shape: tuple[int, int], k_shape: tuple[int, int], bias: Tensor,
                      p: float) -> Tensor:
    """`MultiHeadAttention` of packed queries (Nq, h) over packed keys = values (Nk, h), with an additive `bias`
    (batch|1, 1, q|1, k) and dropout `p` on the weights: the projections on the packed rows, the attention
    (`_Attention`) on padded (batch * heads, steps, d) tensors, W_o on the packed rows again."""
    a, heads = attention, attention.num_heads
    if queries is keys:  # self-attention: one product for the three projections
        w = torch.cat((a.W_q.weight, a.W_k.weight, a.W_v.weight))
        b = None if a.W_q.bias is None else torch.cat((a.W_q.bias, a.W_k.bias, a.W_v.bias))
        Q, K, V = _heads_first(F.linear(queries, w, b), 3, heads, q_index, q_shape)
    else:
        Q, = _heads_first(a.W_q(queries), 1, heads, q_index, q_shape)
        w = torch.cat((a.W_k.weight, a.W_v.weight))
        b = None if a.W_k.bias is None else torch.cat((a.W_k.bias, a.W_v.bias))
        K, V = _heads_first(F.linear(keys, w, b), 2, heads, k_index, k_shape)
    batch = q_shape[0]
    bias = bias.expand(batch, heads, -1, -1).reshape(batch * heads, *bias.shape[2:])
    out = _Attention.apply(Q, K, V, bias, p)                                        # (batch * heads, q, d)
    out = out.reshape(-1, out.shape[-1]).index_select(0, _head_rows(q_index, 1, heads, q_shape))
    return a.W_o(out.view(len(queries), -1))                                        # (Nq, h) -> W_o


class Transformer(EncoderDecoder):
    """The book's Transformer for machine translation (d2l §11.7), trained with the masked loss and Adam.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes (the book's data: 194 and 214).
        num_hiddens, ffn_num_hiddens, num_heads, num_blks, dropout: the book: 256, 64, 4, 2, 0.2.
        lr: Adam's learning rate (the book: 0.001).
        tgt_pad: the index of ``<pad>`` in the target vocabulary, which the loss ignores (the book's data: 5).
        max_len: the positional encoding's table (the book: 1000); a longer sentence is an error.
    """

    def __init__(self, src_vocab_size: int = 194, tgt_vocab_size: int = 214, num_hiddens: int = 256,
                 ffn_num_hiddens: int = 64, num_heads: int = 4, num_blks: int = 2, dropout: float = 0.2,
                 lr: float = 0.001, tgt_pad: int = 5, max_len: int = 1000) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = TransformerEncoder(src_vocab_size, num_hiddens, ffn_num_hiddens, num_heads, num_blks, dropout,
                                          max_len=max_len)
        self.decoder = TransformerDecoder(tgt_vocab_size, num_hiddens, ffn_num_hiddens, num_heads, num_blks, dropout,
                                          max_len=max_len)

    # --- training ----------------------------------------------------------------------------------------------------
    def training_step(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        """The masked loss of a training batch: `packed_loss` on the CPU (in float32 or under bf16 autocast), the
        forward pass elsewhere (one host sync per step to size the packed batch costs nothing on the CPU, but would
        stall a GPU)."""
        if batch[0].device.type == "cpu":
            return {"loss": self.packed_loss(batch)}
        return super().training_step(batch)

    def packed_loss(self, batch: Sequence[Tensor]) -> Tensor:
        """The masked cross-entropy of the forward pass, ``loss(self(src, tgt_in, src_valid_len), tgt_out)``, with
        the position-wise work done only where it counts (see the module docstring). Dropout as the mode says."""
        src, tgt_in, src_valid_len, tgt_out = batch
        pad, dev = self.tgt_pad, src.device
        batch_size, num_steps = tgt_out.shape
        labels = tgt_out != pad
        tgt_len = (labels * torch.arange(1, num_steps + 1, device=dev)).amax(1)  # up to each row's last label
        m, n = (int(v) for v in torch.stack([src_valid_len.max(), tgt_len.max()]).tolist())
        if n == 0:  # not one label: the forward pass's loss, 0 (the masked mean of nothing)
            return self.loss(self(src, tgt_in, src_valid_len), tgt_out)
        src, tgt_in, tgt_out = src[:, :m], tgt_in[:, :n], tgt_out[:, :n]
        src_index = (torch.arange(m, device=dev) < src_valid_len[:, None]).view(-1).nonzero().squeeze(1)
        tgt_index = (torch.arange(n, device=dev) < tgt_len[:, None]).view(-1).nonzero().squeeze(1)
        p = self.dropout if self.training else 0.0
        # additive masks, shared by the blocks: the source's padding; the causal mask of the target
        src_bias = attention_bias(src_valid_len, 1, m)                               # (batch, 1, 1, m)
        causal = attention_bias(None, n, n, causal=True, device=dev)                 # (1, 1, n, n)
        enc = self.encoder
        X = _embed_packed(enc.embedding, enc.pos_encoding, src, src_index, p)        # (Ns, h)
        for blk in enc.blks:
            Y = _add_norm(blk.addnorm1, X, _packed_attention(blk.attention, X, X, src_index, src_index,
                                                             (batch_size, m), (batch_size, m), src_bias, p), p)
            X = _add_norm(blk.addnorm2, Y, blk.ffn(Y), p)
        enc_outputs, dec = X, self.decoder
        X = _embed_packed(dec.embedding, dec.pos_encoding, tgt_in, tgt_index, p)     # (Nt, h)
        for blk in dec.blks:
            Y = _add_norm(blk.addnorm1, X, _packed_attention(blk.attention1, X, X, tgt_index, tgt_index,
                                                             (batch_size, n), (batch_size, n), causal, p), p)
            Z = _add_norm(blk.addnorm2, Y, _packed_attention(blk.attention2, Y, enc_outputs, tgt_index, src_index,
                                                             (batch_size, n), (batch_size, m), src_bias, p), p)
            X = _add_norm(blk.addnorm3, Z, blk.ffn(Z), p)
        logits = dec.dense(X)                                                        # (Nt, V)
        y = tgt_out.reshape(-1).index_select(0, tgt_index)
        mask = (y != pad).to(logits.dtype)
        return (F.cross_entropy(logits, y, reduction="none") * mask).sum() / mask.sum().clamp(min=1)

    # --- the book's leaky validation figure --------------------------------------------------------------------------
    def leaky_forward(self, src: Tensor, tgt_in: Tensor, src_valid_len: Tensor) -> Tensor:
        """The book's decoder in evaluation mode (d2l 1.0.3 ``TransformerDecoderBlock`` with ``self.training``
        False): the target's self-attention is *not* masked, so each position also sees the later target tokens,
        its own label among them. Logits (batch, tgt_seq, V). For comparison with the book's figure only."""
        enc_outputs = self.encoder(src, src_valid_len)
        dec = self.decoder
        X = dec.embed(tgt_in)
        for blk in dec.blks:
            Y = blk.addnorm1(X, blk.attention1(X, X, X))  # no mask: the book's evaluation
            Z = blk.addnorm2(Y, blk.attention2(Y, enc_outputs, enc_outputs, src_valid_len))
            X = blk.addnorm3(Z, blk.ffn(Z))
        return dec.dense(X)

    @torch.no_grad()
    def leaky_validation_loss(self, batch: Sequence[Tensor]) -> Tensor:
        """The masked cross-entropy the book reports as its validation loss (3.36 for the reference here): the
        `leaky_forward` pass, whose target positions see their own labels. Eval mode is the caller's."""
        src, tgt_in, src_valid_len, tgt_out = batch
        return self.loss(self.leaky_forward(src, tgt_in, src_valid_len), tgt_out)

    # --- decoding ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_step(self, batch: Sequence[Tensor], num_steps: int) -> Tensor:
        """The book's greedy prediction (``EncoderDecoder.predict_step``: `num_steps` argmax steps from
        ``tgt[:, 0]``, no stop at ``<eos>``) with the decoder's cache, so that step t's token sits at position t
        (the book's gives every step position 0). Returns (batch, num_steps) indices."""
        src, tgt, src_valid_len = batch[:3]
        state = self.decoder.init_state(self.encoder(src, src_valid_len), src_valid_len)
        state[2] = self.decoder.empty_cache(len(src), src.device)
        outputs = [tgt[:, :1]]
        for _ in range(num_steps):
            Y, state = self.decoder(outputs[-1], state)
            outputs.append(Y.argmax(2))
        return torch.cat(outputs[1:], 1)

    @torch.no_grad()
    def attention_maps(self, src: Tensor, src_valid_len: Tensor, tgt_in: Tensor) -> dict[str, Tensor]:
        """Every attention's weights for one sentence pair, for heatmaps (d2l §11.7.6 draws them).

        Args:
            src: (1, m) int64 source indices; src_valid_len: (1,); tgt_in: (1, n) int64 decoder inputs (``<bos>``
                then the translation so far).

        Returns:
            ``{"encoder self-attention, block i": (heads, m, m), "decoder self-attention, block i": (heads, n, n),
            "decoder cross-attention, block i": (heads, n, m)}`` (i from 1) float tensors, rows summing to 1: the
            forward pass's weights in eval mode (causal rows of the decoder's self-attention are zero above the
            diagonal; the source's padding gets weight 0).
        """
        if src.shape[0] != 1 or tgt_in.shape[0] != 1:
            raise ValueError(f"attention_maps takes one sentence pair, got batches of {src.shape[0]} and "
                             f"{tgt_in.shape[0]}")
        # blocks counted from 1, as the heatmaps count heads: these names are the figure's row labels
        attentions = {f"encoder self-attention, block {i}": blk.attention
                      for i, blk in enumerate(self.encoder.blks, 1)}
        for i, blk in enumerate(self.decoder.blks, 1):
            attentions[f"decoder self-attention, block {i}"] = blk.attention1
            attentions[f"decoder cross-attention, block {i}"] = blk.attention2
        was_training = self.training
        self.eval()
        try:
            for a in attentions.values():
                a.save_weights = True
            self(src, tgt_in, src_valid_len)
            return {name: a.attention_weights[0].clone() for name, a in attentions.items()}
        finally:
            for a in attentions.values():
                a.save_weights, a.attention_weights = False, None
            self.train(was_training)

    # --- graphs ------------------------------------------------------------------------------------------------------
    def encoder_graph(self) -> nn.Module:
        return TransformerEncoderGraph(self.encoder, self.decoder)

    def decoder_step_graph(self) -> nn.Module:
        return TransformerDecoderStep(self.decoder)

    def graph_module(self, name: str) -> nn.Module:
        if name == PREFIX_GRAPH:
            return TransformerDecoderPrefix(self.decoder)
        return super().graph_module(name)

    def graph_inputs(self, name: str, dims: Mapping[str, int]) -> tuple[Tensor, ...]:
        batch_size = dims_or(dims, "batch", 2)
        src_steps, tgt_steps = dims_or(dims, "src_seq", NUM_STEPS), dims_or(dims, "tgt_seq", NUM_STEPS)
        if name == "model":
            return (random_tokens(self.src_vocab_size, batch_size, src_steps),
                    random_tokens(self.tgt_vocab_size, batch_size, tgt_steps),
                    random_valid_lens(batch_size, src_steps))
        if name == "encoder":
            return random_tokens(self.src_vocab_size, batch_size, src_steps), random_valid_lens(batch_size, src_steps)
        d = self.num_hiddens // self.num_heads
        memory = (batch_size, self.num_blks, self.num_heads, src_steps, d)
        bias = attention_bias(random_valid_lens(batch_size, src_steps), 1, src_steps)
        if name == "decoder_step":
            past = dims_or(dims, "past", 2)
            return (random_tokens(self.tgt_vocab_size, batch_size), torch.randn(memory), torch.randn(memory), bias,
                    torch.randn(batch_size, self.num_blks, self.num_heads, past, d),
                    torch.randn(batch_size, self.num_blks, self.num_heads, past, d))
        if name == PREFIX_GRAPH:
            return (random_tokens(self.tgt_vocab_size, batch_size, tgt_steps), torch.randn(memory),
                    torch.randn(memory), bias)
        return super().graph_inputs(name, dims)
