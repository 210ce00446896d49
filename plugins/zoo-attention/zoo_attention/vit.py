"""The Vision Transformer (d2l §11.8, Dosovitskiy et al. 2021): an image cut into patches is a sequence of tokens.

Each non-overlapping ``patch_size`` square is linearly embedded (`zoo_attention.blocks.PatchEmbedding`), a learnable
``<cls>`` token is put in front, a learnable positional embedding is added, and a stack of pre-norm Transformer
encoder blocks (`ViTBlock`: LayerNorm before the attention and before the MLP, residual connections around both)
mixes the tokens; the class comes from the ``<cls>`` token's final representation (LayerNorm, then a dense layer).

The book's function, computed with less work: the head reads only the ``<cls>`` row of the last block's output, and
in a pre-norm block a position's output depends on the others only through the attention's keys and values. So the
last block (`ViTBlock.cls_forward`) computes the ``<cls>`` row alone, and without projecting every position's keys
and values: for each head, ``q . (Y W_k^T)^T = (q W_k) . Y^T`` and ``w (Y W_v^T) = (w Y) W_v^T``, with ``Y`` the
normalised tokens, ``q`` the ``<cls>`` query and ``w`` its attention weights; the same products, associated the
other way. With the book's sizes that leaves 126 of the 240 million multiply-adds per image of the forward pass
(and the same share of the backward's): the logits, the loss and every gradient are the book's up to float rounding
(tests/test_vit.py checks them against a transcription of the book's code with the same weights).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_attention.blocks import MultiHeadAttention, PatchEmbedding
from zoo_core import Classifier


class ViTMLP(nn.Module):
    """The MLP of a ViT block (d2l §11.8.2): dense, GELU (exact, erf), dropout, dense, dropout.

    ``(..., num_inputs) -> (..., mlp_num_outputs)``. The book's takes its input size lazily; here it is explicit.
    """

    def __init__(self, num_inputs: int, mlp_num_hiddens: int, mlp_num_outputs: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dense1 = nn.Linear(num_inputs, mlp_num_hiddens)
        self.gelu = nn.GELU()
        self.dropout1 = nn.Dropout(dropout)
        self.dense2 = nn.Linear(mlp_num_hiddens, mlp_num_outputs)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, X: Tensor) -> Tensor:
        return self.dropout2(self.dense2(self.dropout1(self.gelu(self.dense1(X)))))


class ViTBlock(nn.Module):
    """A pre-norm Transformer encoder block (d2l §11.8.3): ``X + MHA(LN(X))``, then ``X + MLP(LN(X))``.

    Unlike the post-norm blocks of §11.7 (normalisation after each residual addition), the residual stream itself is
    never normalised, which trains deep stacks more stably. Dropout (`dropout`) is on the attention weights and in
    the MLP, as in the book.
    """

    def __init__(self, num_hiddens: int, mlp_num_hiddens: int, num_heads: int, dropout: float,
                 use_bias: bool = False) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(num_hiddens)
        self.attention = MultiHeadAttention(num_hiddens, num_heads, dropout, use_bias)
        self.ln2 = nn.LayerNorm(num_hiddens)
        self.mlp = ViTMLP(num_hiddens, mlp_num_hiddens, num_hiddens, dropout)

    def forward(self, X: Tensor) -> Tensor:
        """``X`` (b, n, h) -> (b, n, h)."""
        Y = self.ln1(X)
        X = X + self.attention(Y, Y, Y)
        return X + self.mlp(self.ln2(X))

    def cls_forward(self, X: Tensor) -> Tensor:
        """The first position's output alone: ``X`` (b, n, h) -> (b, 1, h), ``forward(X)[:, :1]`` computed with 3% of its
        multiply-adds (for the book's sizes). The attention uses `attention`'s weights, but instead of
        the keys and values of every position (2 n h^2 multiply-adds) it maps the one query back through each head's
        W_k and its attention-weighted mix of positions through W_v (4 h^2 + 2 n h); dropout falls on the attention
        weights, as in `MultiHeadAttention`."""
        att = self.attention
        b, n, h = X.shape
        heads = att.num_heads
        d = h // heads
        Y = self.ln1(X)
        q = att.W_q(Y[:, :1]).view(b, heads, d)
        W_k, W_v = att.W_k.weight.view(heads, d, h), att.W_v.weight.view(heads, d, h)
        scores = torch.einsum("bkd,kdh->bkh", q, W_k) @ Y.transpose(1, 2)  # (b, heads, n): q . K^T per head
        if att.W_k.bias is not None:
            scores = scores + (q * att.W_k.bias.view(heads, d)).sum(-1, keepdim=True)
        weights = F.dropout(F.softmax(scores / math.sqrt(d), dim=-1), att.dropout, self.training)
        out = torch.einsum("bkh,kdh->bkd", weights @ Y, W_v)  # (b, heads, d): weights . V per head
        if att.W_v.bias is not None:  # the weights sum to 1 only without dropout
            out = out + weights.sum(-1, keepdim=True) * att.W_v.bias.view(heads, d)
        X = X[:, :1] + att.W_o(out.reshape(b, 1, h))
        return X + self.mlp(self.ln2(X))


class ViT(Classifier):
    """The Vision Transformer of d2l §11.8.

    Args:
        img_size: side of the square input images (96: Fashion-MNIST resized as the book does).
        patch_size: side of the square patches (16: a 96 px image is 6 x 6 = 36 patches, 37 tokens with ``<cls>``).
        num_hiddens: the tokens' size h (512).
        mlp_num_hiddens: the hidden size of each block's MLP (2048).
        num_heads: attention heads per block (8).
        num_blks: encoder blocks (2).
        emb_dropout: dropout on the embedded tokens (patches + ``<cls>``, plus positions) (0.1).
        blk_dropout: dropout in the blocks (attention weights, MLP) (0.1).
        lr: SGD learning rate (0.1; the book's `d2l.Classifier` trains with minibatch SGD).
        use_bias: biases in the attention's W_q, W_k, W_v, W_o (the book: no).
        num_classes: 10.
        in_channels: 1 (grey images).

    Parameters as the book's: ``cls_token`` (1, 1, h) starts at zero, ``pos_embedding`` (1, num_patches + 1, h) is
    drawn from N(0, 1); the layers keep PyTorch's default initialisation. ``forward(X (b, in_channels, img_size,
    img_size)) -> logits (b, num_classes)``.
    """

    def __init__(self, img_size: int = 96, patch_size: int = 16, num_hiddens: int = 512, mlp_num_hiddens: int = 2048,
                 num_heads: int = 8, num_blks: int = 2, emb_dropout: float = 0.1, blk_dropout: float = 0.1,
                 lr: float = 0.1, use_bias: bool = False, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.save_hyperparameters()
        if num_blks < 1:
            raise ValueError(f"a ViT needs at least one block, got num_blks={num_blks}")
        self.patch_embedding = PatchEmbedding(img_size, patch_size, num_hiddens, in_channels)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, num_hiddens))
        num_steps = self.patch_embedding.num_patches + 1  # the <cls> token
        self.pos_embedding = nn.Parameter(torch.randn(1, num_steps, num_hiddens))  # learnable
        self.dropout = nn.Dropout(emb_dropout)
        self.blks = nn.Sequential(*(ViTBlock(num_hiddens, mlp_num_hiddens, num_heads, blk_dropout, use_bias)
                                    for _ in range(num_blks)))
        self.head = nn.Sequential(nn.LayerNorm(num_hiddens), nn.Linear(num_hiddens, num_classes))

    def embed(self, X: Tensor) -> Tensor:
        """Images (b, c, H, W) -> tokens (b, num_patches + 1, h): ``<cls>`` first, positions added, dropout."""
        X = self.patch_embedding(X)
        X = torch.cat((self.cls_token.expand(X.shape[0], -1, -1), X), dim=1)
        return self.dropout(X + self.pos_embedding)

    def forward(self, X: Tensor) -> Tensor:
        X = self.embed(X)
        *blks, last = self.blks
        for blk in blks:
            X = blk(X)
        X = last.cls_forward(X)  # the <cls> row only: the head reads nothing else (see the module's docstring)
        return self.head(X[:, 0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The book's minibatch SGD on ``lr``."""
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        size = self.img_size
        return (torch.rand(batch_size, self.in_channels, size, size),)
