"""The building blocks of chapter 11 (d2l §11.1-11.8): masking, attention scoring, multi-head attention, positional
encoding, and the Transformer's encoder and decoder blocks.

The book's blocks, with three changes that export and decoding need:

- no ``nn.Lazy*`` layers: every size is explicit, so a model's parameters exist when it is built (safetensors
  loading and ``torch.export`` need them);
- `MultiHeadAttention` runs ``torch.nn.functional.scaled_dot_product_attention`` on 4-D (batch, heads, steps, d)
  tensors, the form the ONNX exporter translates (its 3-D form does not export: "only 4D query, key, and value are
  supported"), instead of the book's ``bmm`` over (batch * heads) rows; the masking is an additive bias of -1e6, the
  book's value, built with ``torch.where`` (never by assigning through a boolean index, whose ONNX translation had
  a bug);
- the Transformer blocks take a key/value cache for step-by-step decoding (``step``), and the decoder's
  self-attention is causal in training *and* evaluation (the book's masks only in training, so its validation loss
  lets every position see the token it predicts), with positions counted from the cache's length (the book's
  decoding gives every new token position 0).

Shapes: b batch, q queries, k keys, h hidden (``num_hiddens``), d = h / heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MASK_VALUE = -1e6  # the book's masked score (d2l §11.3.2): exp(-1e6) is 0 in float32, and no row becomes NaN


def _keep(valid_lens: Tensor, num_keys: int, ndim: int) -> Tensor:
    """Boolean (b, 1.., q|1, k): key j is kept where j < valid length. ``valid_lens`` (b,) or (b, q)."""
    keys = torch.arange(num_keys, device=valid_lens.device)
    if valid_lens.dim() == 1:
        valid = valid_lens.reshape(-1, *[1] * (ndim - 1))
    else:  # (b, q): one length per query
        valid = valid_lens.reshape(valid_lens.shape[0], *[1] * (ndim - 3), valid_lens.shape[1], 1)
    return keys < valid


def masked_softmax(X: Tensor, valid_lens: Tensor | None) -> Tensor:
    """Softmax over the last axis of `X`, keeping only the first valid keys of each row (d2l §11.3.2).

    Args:
        X: scores (b, ..., q, k), e.g. (b, q, k) or (b, heads, q, k).
        valid_lens: None (no mask), (b,) one length per example, or (b, q) one per query.

    Returns:
        Attention weights, the shape of `X`, zero past each row's valid length. As in the book, the masked scores are
        *replaced* by -1e6, so a row whose valid length is 0 has every score equal: its weights are uniform over all
        k keys (1/k each), never NaN.
    """
    if valid_lens is None:
        return F.softmax(X, dim=-1)
    keep = _keep(valid_lens, X.shape[-1], X.dim())
    return F.softmax(torch.where(keep, X, torch.full((), MASK_VALUE, dtype=X.dtype, device=X.device)), dim=-1)


def attention_bias(valid_lens: Tensor | None, num_queries: int, num_keys: int, causal: bool = False,
                   dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor | None:
    """The additive mask of `MultiHeadAttention`: 0 where a query may see a key, -1e6 where it may not.

    Args:
        valid_lens: None, (b,) or (b, q): the number of valid keys (as in `masked_softmax`).
        num_queries, num_keys: q and k.
        causal: query i sees keys j <= i + (k - q) only (with a cache, the last q of k positions are the queries').
        device: where to build the mask when there are no valid lengths (default: the valid lengths' device).

    Returns:
        None when nothing is masked, else (b|1, 1, q|1, k), broadcastable over heads.

    Unlike `masked_softmax`, the bias is *added* to the scores: a query with no valid key at all (valid length 0)
    gets the softmax of its unmasked scores. Sources have at least ``<eos>``, so no model of the zoo meets that case.
    """
    if valid_lens is None and not causal:
        return None
    keep = None
    if valid_lens is not None:
        keep = _keep(valid_lens, num_keys, 4)
        device = valid_lens.device
    if causal:
        rows = torch.arange(num_queries, device=device)[:, None] + (num_keys - num_queries)
        future = torch.arange(num_keys, device=device)[None, :] <= rows  # (q, k)
        keep = future if keep is None else keep & future
    zero = torch.zeros((), dtype=dtype, device=keep.device)
    bias = torch.where(keep, zero, torch.full((), MASK_VALUE, dtype=dtype, device=keep.device))
    return bias if bias.dim() == 4 else bias.reshape(1, 1, num_queries, num_keys)


class DotProductAttention(nn.Module):
    """Scaled dot-product attention (d2l §11.3.2), the book's 3-D form: ``softmax(Q K^T / sqrt(d)) V``, masked by
    `masked_softmax`, with dropout on the weights. `MultiHeadAttention` computes the same with SDPA (a test holds
    them equal).

    ``forward(queries (b, q, d), keys (b, k, d), values (b, k, v), valid_lens=None (b,) | (b, q)) -> (b, q, v)``;
    ``attention_weights`` (b, q, k) holds the last call's weights.
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.attention_weights: Tensor | None = None

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, valid_lens: Tensor | None = None) -> Tensor:
        d = queries.shape[-1]
        scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)
        self.attention_weights = masked_softmax(scores, valid_lens)
        return torch.bmm(self.dropout(self.attention_weights), values)


class AdditiveAttention(nn.Module):
    """Additive attention (d2l §11.3.3, Bahdanau et al. 2014): ``a(q, k) = w_v^T tanh(W_q q + W_k k)``.

    Args:
        key_size, query_size: the keys' and the queries' feature sizes (the book's ``LazyLinear`` infers them).
        num_hiddens: the size of the hidden layer the scores are computed in.
        dropout: on the attention weights.

    ``forward(queries (b, q, query_size), keys (b, k, key_size), values (b, k, v), valid_lens=None,
    projected_keys=None) -> (b, q, v)``; ``attention_weights`` (b, q, k) holds the last call's weights. The keys'
    projection ``W_k k`` depends on the source only: a decoder that attends at every step computes it once with
    `project_keys` and passes it as `projected_keys` (the book recomputes it at every step: the same numbers).
    """

    def __init__(self, key_size: int, query_size: int, num_hiddens: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.W_k = nn.Linear(key_size, num_hiddens, bias=False)
        self.W_q = nn.Linear(query_size, num_hiddens, bias=False)
        self.w_v = nn.Linear(num_hiddens, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.attention_weights: Tensor | None = None

    def project_keys(self, keys: Tensor) -> Tensor:
        """``W_k keys``: (b, k, key_size) -> (b, k, num_hiddens)."""
        return self.W_k(keys)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, valid_lens: Tensor | None = None,
                projected_keys: Tensor | None = None) -> Tensor:
        K = self.project_keys(keys) if projected_keys is None else projected_keys
        features = torch.tanh(self.W_q(queries).unsqueeze(2) + K.unsqueeze(1))  # (b, q, k, num_hiddens)
        scores = self.w_v(features).squeeze(-1)                                  # (b, q, k)
        self.attention_weights = masked_softmax(scores, valid_lens)
        return torch.bmm(self.dropout(self.attention_weights), values)


class MultiHeadAttention(nn.Module):
    """Multi-head attention (d2l §11.5, Vaswani et al. 2017) on ``scaled_dot_product_attention``.

    Args:
        num_hiddens: h, the queries', keys', values' and output's size; each of the `num_heads` heads works in
            d = h / num_heads dimensions.
        num_heads: the number of heads.
        dropout: on the attention weights (training only).
        bias: whether W_q, W_k, W_v and W_o have biases (the book: no).

    ``forward(queries (b, q, h), keys (b, k, h), values (b, k, h), valid_lens=None, causal=False) -> (b, q, h)``:
    the book's ``MultiHeadAttention`` (its ``transpose_qkv``/``transpose_output`` are `split_heads`/`merge_heads`).
    Set ``save_weights = True`` to keep the weights of each call in ``attention_weights`` (b, heads, q, k), computed
    explicitly (SDPA does not return them): for heatmaps, not for training.
    """

    def __init__(self, num_hiddens: int, num_heads: int, dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        if num_hiddens % num_heads:
            raise ValueError(f"num_hiddens ({num_hiddens}) must be a multiple of num_heads ({num_heads})")
        self.num_heads, self.dropout = num_heads, dropout
        self.W_q = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_k = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_v = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_o = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.save_weights = False
        self.attention_weights: Tensor | None = None

    def split_heads(self, X: Tensor) -> Tensor:
        """(b, n, h) -> (b, heads, n, d)."""
        return X.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    @staticmethod
    def merge_heads(X: Tensor) -> Tensor:
        """(b, heads, n, d) -> (b, n, h)."""
        return X.transpose(1, 2).flatten(2)

    def project_kv(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """The heads' keys and values: (b, k, h) each -> (b, heads, k, d) each. A cross-attention whose keys and
        values are the encoder's outputs computes them once per sentence."""
        return self.split_heads(self.W_k(keys)), self.split_heads(self.W_v(values))

    def attend(self, Q: Tensor, K: Tensor, V: Tensor, bias: Tensor | None = None) -> Tensor:
        """Attention of split heads ``Q`` (b, heads, q, d) over ``K``, ``V`` (b, heads, k, d), with an additive
        `bias` (from `attention_bias`) -> ``W_o`` of the merged heads, (b, q, h)."""
        p = self.dropout if self.training else 0.0
        if self.save_weights:
            scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
            weights = F.softmax(scores if bias is None else scores + bias, dim=-1)
            self.attention_weights = weights.detach()
            out = F.dropout(weights, p, self.training) @ V
        else:
            out = F.scaled_dot_product_attention(Q, K, V, attn_mask=bias, dropout_p=p)
        return self.W_o(self.merge_heads(out))

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, valid_lens: Tensor | None = None,
                causal: bool = False) -> Tensor:
        Q = self.split_heads(self.W_q(queries))
        K, V = self.project_kv(keys, values)
        bias = attention_bias(valid_lens, Q.shape[2], K.shape[2], causal, Q.dtype, Q.device)
        return self.attend(Q, K, V, bias)

    def self_attend_cached(self, X: Tensor, past_k: Tensor, past_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Causal self-attention of new positions over the cache and themselves, for step-by-step decoding.

        Args:
            X: (b, n, h), the new positions (n = 1 in decoding).
            past_k, past_v: (b, heads, past, d), the earlier positions' keys and values (past may be 0).

        Returns:
            (Y (b, n, h), K, V (b, heads, past + n, d)): the outputs and the grown cache. Equal, position by
            position, to `forward` with ``causal=True`` over the whole sequence.
        """
        Q = self.split_heads(self.W_q(X))
        k, v = self.project_kv(X, X)
        K, V = torch.cat((past_k, k), dim=2), torch.cat((past_v, v), dim=2)
        n = X.shape[1]
        bias = None if n == 1 else attention_bias(None, n, K.shape[2], True, X.dtype, X.device)
        return self.attend(Q, K, V, bias), K, V


class PositionalEncoding(nn.Module):
    """Sinusoidal positional encoding (d2l §11.6.3): ``P[i, 2j] = sin(i / 10000^(2j/h))``, ``P[i, 2j+1] = cos(...)``,
    added to the input, then dropout.

    Args:
        num_hiddens: h (even).
        dropout: after the addition.
        max_len: the table's length (the book: 1000), a registered buffer ``P`` (1, max_len, h) (not saved with
            the weights: it is a function of the sizes).

    ``forward(X (b, n, h), offset=0) -> (b, n, h)`` adds positions ``offset .. offset + n - 1`` (offset = the
    cache's length in step-by-step decoding). Positions are gathered, not sliced: a position past the table raises
    ValueError here and an index error in ONNX Runtime, never a silently shorter slice.
    """

    def __init__(self, num_hiddens: int, dropout: float = 0.0, max_len: int = 1000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.max_len = max_len
        i = torch.arange(max_len, dtype=torch.float32).reshape(-1, 1)
        angles = i / torch.pow(10000, torch.arange(0, num_hiddens, 2, dtype=torch.float32) / num_hiddens)
        P = torch.zeros((1, max_len, num_hiddens))
        P[:, :, 0::2] = torch.sin(angles)
        P[:, :, 1::2] = torch.cos(angles)
        self.register_buffer("P", P, persistent=False)

    def forward(self, X: Tensor, offset: int | torch.SymInt = 0) -> Tensor:
        n = X.shape[1]
        if not torch.compiler.is_exporting() and isinstance(offset, int) and offset + n > self.max_len:
            raise ValueError(f"a sequence of {offset + n} positions is longer than the positional encoding's table "
                             f"({self.max_len}); build the model with a larger max_len")
        positions = torch.arange(n, device=X.device) + offset
        return self.dropout(X + self.P[0].index_select(0, positions))


class PositionWiseFFN(nn.Module):
    """The position-wise feed-forward network (d2l §11.7.2): ``dense2(relu(dense1(X)))`` at every position.

    Args: num_inputs (h), ffn_num_hiddens, ffn_num_outputs. ``(b, n, num_inputs) -> (b, n, ffn_num_outputs)``.
    """

    def __init__(self, num_inputs: int, ffn_num_hiddens: int, ffn_num_outputs: int) -> None:
        super().__init__()
        self.dense1 = nn.Linear(num_inputs, ffn_num_hiddens)
        self.relu = nn.ReLU()
        self.dense2 = nn.Linear(ffn_num_hiddens, ffn_num_outputs)

    def forward(self, X: Tensor) -> Tensor:
        return self.dense2(self.relu(self.dense1(X)))


class AddNorm(nn.Module):
    """Residual connection then layer normalisation (d2l §11.7.2): ``LayerNorm(dropout(Y) + X)`` (post-norm)."""

    def __init__(self, norm_shape: int | tuple[int, ...], dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.ln = nn.LayerNorm(norm_shape)

    def forward(self, X: Tensor, Y: Tensor) -> Tensor:
        return self.ln(self.dropout(Y) + X)


class TransformerEncoderBlock(nn.Module):
    """The Transformer encoder block (d2l §11.7.2): self-attention, add & norm, FFN, add & norm (post-norm).

    ``forward(X (b, n, h), valid_lens=None, causal=False) -> (b, n, h)``. With ``causal=True`` (position i sees
    positions <= i) it is the block of a decoder-only language model, and `step` runs it one position at a time
    with a key/value cache.
    """

    def __init__(self, num_hiddens: int, ffn_num_hiddens: int, num_heads: int, dropout: float = 0.0,
                 use_bias: bool = False) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(num_hiddens, num_heads, dropout, use_bias)
        self.addnorm1 = AddNorm(num_hiddens, dropout)
        self.ffn = PositionWiseFFN(num_hiddens, ffn_num_hiddens, num_hiddens)
        self.addnorm2 = AddNorm(num_hiddens, dropout)

    def forward(self, X: Tensor, valid_lens: Tensor | None = None, causal: bool = False) -> Tensor:
        Y = self.addnorm1(X, self.attention(X, X, X, valid_lens, causal))
        return self.addnorm2(Y, self.ffn(Y))

    def step(self, X: Tensor, past_k: Tensor, past_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Causal `forward` of new positions X (b, n, h) given the cache (b, heads, past, d) of the earlier ones ->
        (outputs (b, n, h), the grown cache K, V (b, heads, past + n, d))."""
        Y, K, V = self.attention.self_attend_cached(X, past_k, past_v)
        Y = self.addnorm1(X, Y)
        return self.addnorm2(Y, self.ffn(Y)), K, V


class TransformerDecoderBlock(nn.Module):
    """The Transformer decoder block (d2l §11.7.3): causal self-attention, add & norm, attention over the encoder's
    outputs, add & norm, FFN, add & norm (post-norm).

    ``forward(X (b, n, h), enc_outputs (b, m, h), enc_valid_lens (b,) | None) -> (b, n, h)``: the whole target at
    once, causally masked in training and evaluation alike (the book's block masks only in training). For decoding
    one token at a time, `cross_kv` projects the encoder's outputs once per sentence and `step` runs new positions
    against a self-attention cache; the two give `forward`'s outputs position by position.
    """

    def __init__(self, num_hiddens: int, ffn_num_hiddens: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention1 = MultiHeadAttention(num_hiddens, num_heads, dropout)
        self.addnorm1 = AddNorm(num_hiddens, dropout)
        self.attention2 = MultiHeadAttention(num_hiddens, num_heads, dropout)
        self.addnorm2 = AddNorm(num_hiddens, dropout)
        self.ffn = PositionWiseFFN(num_hiddens, ffn_num_hiddens, num_hiddens)
        self.addnorm3 = AddNorm(num_hiddens, dropout)

    def forward(self, X: Tensor, enc_outputs: Tensor, enc_valid_lens: Tensor | None) -> Tensor:
        Y = self.addnorm1(X, self.attention1(X, X, X, causal=True))
        Z = self.addnorm2(Y, self.attention2(Y, enc_outputs, enc_outputs, enc_valid_lens))
        return self.addnorm3(Z, self.ffn(Z))

    def cross_kv(self, enc_outputs: Tensor) -> tuple[Tensor, Tensor]:
        """The cross-attention's keys and values: (b, m, h) -> (b, heads, m, d) each."""
        return self.attention2.project_kv(enc_outputs, enc_outputs)

    def step(self, X: Tensor, past_k: Tensor, past_v: Tensor, cross_k: Tensor, cross_v: Tensor,
             cross_bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """New positions X (b, n, h) given the self-attention cache (b, heads, past, d), the cross-attention's keys
        and values from `cross_kv` and its bias (``attention_bias(enc_valid_lens, 1, m)``, (b, 1, 1, m)) ->
        (outputs (b, n, h), the grown cache K, V (b, heads, past + n, d))."""
        Y, K, V = self.attention1.self_attend_cached(X, past_k, past_v)
        Y = self.addnorm1(X, Y)
        Q = self.attention2.split_heads(self.attention2.W_q(Y))
        Z = self.addnorm2(Y, self.attention2.attend(Q, cross_k, cross_v, cross_bias))
        return self.addnorm3(Z, self.ffn(Z)), K, V


class PatchEmbedding(nn.Module):
    """Patch embedding of the Vision Transformer (d2l §11.8.1): a convolution with kernel and stride the patch size,
    i.e. a linear map of each non-overlapping patch.

    Args: img_size (96), patch_size (16), num_hiddens (512), in_channels (1: Fashion-MNIST; the book's
    ``LazyConv2d`` infers it). ``(b, in_channels, H, W) -> (b, num_patches, num_hiddens)``.
    """

    def __init__(self, img_size: int | tuple[int, int] = 96, patch_size: int | tuple[int, int] = 16,
                 num_hiddens: int = 512, in_channels: int = 1) -> None:
        super().__init__()
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        patch_size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        self.num_patches = (img_size[0] // patch_size[0]) * (img_size[1] // patch_size[1])
        self.conv = nn.Conv2d(in_channels, num_hiddens, kernel_size=patch_size, stride=patch_size)

    def forward(self, X: Tensor) -> Tensor:
        return self.conv(X).flatten(2).transpose(1, 2)
