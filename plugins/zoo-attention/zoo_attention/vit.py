"""The Vision Transformer (d2l §11.8, Dosovitskiy et al. 2021): an image cut into patches is a sequence of tokens.

Each non-overlapping ``patch_size`` square is linearly embedded (`zoo_attention.blocks.PatchEmbedding`), a learnable
``<cls>`` token is put in front, a learnable positional embedding is added, and a stack of pre-norm Transformer
encoder blocks (`ViTBlock`: LayerNorm before the attention and before the MLP, residual connections around both)
mixes the tokens; the class comes from the ``<cls>`` token's final representation (LayerNorm, then a dense layer).

The book's computation, with one saving: the head reads only the ``<cls>`` row of the last block's output, and in a
pre-norm block every position's output depends on the other positions only through the attention's keys and values.
So the last block computes keys and values for every position, but queries, the attention output, W_o, the residual
and the MLP for the ``<cls>`` row alone: the other rows' results would be thrown away. With the book's sizes that is
40% of the forward pass's multiply-adds (and of the backward's); the logits, and so the loss and every gradient,
are those of the book's full forward pass (tests/test_vit.py checks that against a transcription of the book's code).
"""

from __future__ import annotations

import torch
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

    def forward(self, X: Tensor, queries: int | None = None) -> Tensor:
        """``X`` (b, n, h) -> (b, n, h); with `queries`, only the first `queries` positions' outputs (b, queries, h),
        which are those of the full call: every position's keys and values still enter the attention."""
        Y = self.ln1(X)
        if queries is not None:
            X = X[:, :queries]
        X = X + self.attention(Y if queries is None else Y[:, :queries], Y, Y)
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
        X = last(X, queries=1)  # the <cls> row only: the head reads nothing else (see the module's docstring)
        return self.head(X[:, 0])

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        size = self.img_size
        return (torch.rand(batch_size, self.in_channels, size, size),)
