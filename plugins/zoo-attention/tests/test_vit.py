"""The Vision Transformer (d2l §11.8) against the book's computation, with the same weights.

`BookViT` below transcribes the book's PyTorch code (d2l 1.0.3: ``PatchEmbedding``, ``ViTMLP``, ``ViTBlock``,
``ViT``, and the library's ``MultiHeadAttention`` / ``DotProductAttention`` with its ``transpose_qkv`` and
``transpose_output``), with explicit instead of lazy layer sizes. Its parameter names are the zoo's, so one state
dict loads into both: the zoo's ViT must give the book's logits and the book's gradients, although its last block
computes the ``<cls>`` row only.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo_attention.vit import ViT, ViTBlock, ViTMLP

pytestmark = pytest.mark.usefixtures("single_thread")


# --- the book's code, transcribed ---------------------------------------------------------------------------------
class BookDotProductAttention(nn.Module):  # d2l 11.3 (valid_lens None: masked_softmax is a plain softmax)
    def __init__(self, dropout):
        super().__init__()
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries, keys, values):
        d = queries.shape[-1]
        scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)
        self.attention_weights = F.softmax(scores, dim=-1)
        return torch.bmm(self.dropout(self.attention_weights), values)


class BookMultiHeadAttention(nn.Module):  # d2l 11.5
    def __init__(self, num_hiddens, num_heads, dropout, bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.attention = BookDotProductAttention(dropout)
        self.W_q = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_k = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_v = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_o = nn.Linear(num_hiddens, num_hiddens, bias=bias)

    def forward(self, queries, keys, values):
        queries = self.transpose_qkv(self.W_q(queries))
        keys = self.transpose_qkv(self.W_k(keys))
        values = self.transpose_qkv(self.W_v(values))
        output = self.attention(queries, keys, values)
        return self.W_o(self.transpose_output(output))

    def transpose_qkv(self, X):
        X = X.reshape(X.shape[0], X.shape[1], self.num_heads, -1)
        X = X.permute(0, 2, 1, 3)
        return X.reshape(-1, X.shape[2], X.shape[3])

    def transpose_output(self, X):
        X = X.reshape(-1, self.num_heads, X.shape[1], X.shape[2])
        X = X.permute(0, 2, 1, 3)
        return X.reshape(X.shape[0], X.shape[1], -1)


class BookPatchEmbedding(nn.Module):  # d2l 11.8.1
    def __init__(self, img_size, patch_size, num_hiddens):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.conv = nn.Conv2d(1, num_hiddens, kernel_size=patch_size, stride=patch_size)

    def forward(self, X):
        return self.conv(X).flatten(2).transpose(1, 2)


class BookViTMLP(nn.Module):  # d2l 11.8.2
    def __init__(self, num_inputs, mlp_num_hiddens, mlp_num_outputs, dropout=0.5):
        super().__init__()
        self.dense1 = nn.Linear(num_inputs, mlp_num_hiddens)
        self.gelu = nn.GELU()
        self.dropout1 = nn.Dropout(dropout)
        self.dense2 = nn.Linear(mlp_num_hiddens, mlp_num_outputs)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout2(self.dense2(self.dropout1(self.gelu(self.dense1(x)))))


class BookViTBlock(nn.Module):  # d2l 11.8.3
    def __init__(self, num_hiddens, norm_shape, mlp_num_hiddens, num_heads, dropout, use_bias=False):
        super().__init__()
        self.ln1 = nn.LayerNorm(norm_shape)
        self.attention = BookMultiHeadAttention(num_hiddens, num_heads, dropout, use_bias)
        self.ln2 = nn.LayerNorm(norm_shape)
        self.mlp = BookViTMLP(num_hiddens, mlp_num_hiddens, num_hiddens, dropout)

    def forward(self, X):
        X = X + self.attention(*([self.ln1(X)] * 3))
        return X + self.mlp(self.ln2(X))


class BookViT(nn.Module):  # d2l 11.8.4
    def __init__(self, img_size, patch_size, num_hiddens, mlp_num_hiddens, num_heads, num_blks, emb_dropout,
                 blk_dropout, use_bias=False, num_classes=10):
        super().__init__()
        self.patch_embedding = BookPatchEmbedding(img_size, patch_size, num_hiddens)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, num_hiddens))
        num_steps = self.patch_embedding.num_patches + 1
        self.pos_embedding = nn.Parameter(torch.randn(1, num_steps, num_hiddens))
        self.dropout = nn.Dropout(emb_dropout)
        self.blks = nn.Sequential()
        for i in range(num_blks):
            self.blks.add_module(f"{i}", BookViTBlock(num_hiddens, num_hiddens, mlp_num_hiddens, num_heads,
                                                      blk_dropout, use_bias))
        self.head = nn.Sequential(nn.LayerNorm(num_hiddens), nn.Linear(num_hiddens, num_classes))

    def forward(self, X):
        X = self.patch_embedding(X)
        X = torch.cat((self.cls_token.expand(X.shape[0], -1, -1), X), 1)
        X = self.dropout(X + self.pos_embedding)
        for blk in self.blks:
            X = blk(X)
        return self.head(X[:, 0])


# --- tests ---------------------------------------------------------------------------------------------------------
SMALL = {"img_size": 32, "patch_size": 8, "num_hiddens": 64, "mlp_num_hiddens": 128, "num_heads": 4,
         "emb_dropout": 0.1, "blk_dropout": 0.1}


def pair(num_blks: int, **changes) -> tuple[ViT, BookViT]:
    """A zoo ViT and the book's, with the zoo's (randomised) weights in both."""
    torch.manual_seed(0)
    hp = {**SMALL, "num_blks": num_blks, **changes}
    zoo = ViT(**hp)
    with torch.no_grad():  # the cls token starts at zero and LayerNorms at (1, 0): move them off the defaults
        for p in zoo.parameters():
            p.add_(0.1 * torch.randn_like(p))
    book = BookViT(**{k: v for k, v in hp.items() if k != "lr"})
    book.load_state_dict(zoo.state_dict())  # strict: the same names and shapes
    return zoo, book


@pytest.mark.parametrize("num_blks,use_bias", [(1, False), (2, False), (3, False), (2, True)])
def test_logits_and_gradients_are_the_books(num_blks: int, use_bias: bool) -> None:
    zoo, book = pair(num_blks, use_bias=use_bias)
    zoo.eval(), book.eval()
    X, y = torch.rand(5, 1, 32, 32), torch.randint(0, 10, (5,))
    out_zoo, out_book = zoo(X), book(X)
    torch.testing.assert_close(out_zoo, out_book, atol=1e-5, rtol=1e-5)
    F.cross_entropy(out_zoo, y).backward()
    F.cross_entropy(out_book, y).backward()
    book_grads = dict(book.named_parameters())
    for name, p in zoo.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, book_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_training_mode_is_the_books_without_dropout_and_random_with_it() -> None:
    """In training mode the computation is the book's (dropout off); dropout (on) draws new masks each call."""
    zoo, book = pair(2, emb_dropout=0.0, blk_dropout=0.0)
    X = torch.rand(4, 1, 32, 32)
    torch.testing.assert_close(zoo.train()(X), book.train()(X), atol=1e-5, rtol=1e-5)
    zoo, _ = pair(2)
    zoo.train()
    first, second = zoo(X), zoo(X)
    assert not torch.allclose(first, second)
    torch.manual_seed(3)
    again = zoo(X)
    torch.manual_seed(3)
    assert torch.equal(again, zoo(X))


def test_the_book_preset_has_the_books_sizes() -> None:
    """The book's sizes (d2l §11.8.4): 36 patches + <cls> = 37 tokens of 512; its parameter count and names."""
    torch.manual_seed(0)
    zoo = ViT()
    book = BookViT(96, 16, 512, 2048, 8, 2, 0.1, 0.1)
    assert [(k, v.shape) for k, v in zoo.state_dict().items()] == [(k, v.shape) for k, v in book.state_dict().items()]
    assert zoo.num_params() == sum(p.numel() for p in book.parameters()) == 6_457_866
    assert zoo.patch_embedding.num_patches == 36
    zoo.eval()
    X = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        assert zoo.patch_embedding(X).shape == (2, 36, 512)
        assert zoo.embed(X).shape == (2, 37, 512)
        assert zoo(X).shape == (2, 10)
    assert isinstance(zoo.configure_optimizers(), torch.optim.SGD)  # the book's d2l.Classifier: minibatch SGD
    assert zoo.configure_optimizers().param_groups[0]["lr"] == 0.1


def test_the_cls_token() -> None:
    """<cls> is a learned parameter, starts at zero, sits at position 0 with the first positional embedding, and is
    what the head reads: the class depends on it, and it receives a gradient."""
    torch.manual_seed(0)
    zoo = ViT(**SMALL, num_blks=2).eval()
    assert torch.equal(zoo.cls_token, torch.zeros(1, 1, 64))
    X = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        tokens = zoo.embed(X)
        torch.testing.assert_close(tokens[:, 0], (zoo.cls_token[0] + zoo.pos_embedding[:, 0]).expand(3, -1))
        torch.testing.assert_close(tokens[:, 1:], zoo.patch_embedding(X) + zoo.pos_embedding[:, 1:])
        before = zoo(X)
        zoo.cls_token.add_(torch.randn_like(zoo.cls_token))
        assert not torch.allclose(before, zoo(X))
    F.cross_entropy(zoo(X), torch.tensor([0, 1, 2])).backward()
    assert zoo.cls_token.grad.abs().sum() > 0


@pytest.mark.parametrize("use_bias", [False, True])
def test_cls_forward_is_the_full_blocks_first_row(use_bias: bool) -> None:
    """The last block's shortcut: the <cls> row of the full block, in eval mode and (dropout off) in training."""
    torch.manual_seed(0)
    blk = ViTBlock(32, 64, 4, 0.0, use_bias=use_bias)
    X = torch.randn(3, 7, 32)
    for mode in (blk.eval, blk.train):
        mode()
        full = blk(X)
        assert full.shape == (3, 7, 32)
        torch.testing.assert_close(blk.cls_forward(X), full[:, :1], atol=1e-5, rtol=1e-5)


def test_cls_forward_drops_attention_weights_in_training() -> None:
    torch.manual_seed(0)
    blk = ViTBlock(32, 64, 4, 0.5).train()
    blk.mlp.eval()  # only the attention's dropout
    X = torch.randn(64, 7, 32)
    with torch.no_grad():
        eval_out = blk.eval().cls_forward(X)
        blk.train(); blk.mlp.eval()
        assert not torch.allclose(blk.cls_forward(X), eval_out)
        runs = torch.stack([blk.cls_forward(X) for _ in range(400)]).mean(0)  # inverted dropout: same mean
    torch.testing.assert_close(runs, eval_out, atol=0.1, rtol=0)


def test_mlp_is_gelu_between_two_dense_layers() -> None:
    torch.manual_seed(0)
    mlp = ViTMLP(8, 16, 4, dropout=0.5).eval()
    X = torch.randn(2, 5, 8)
    expected = mlp.dense2(0.5 * mlp.dense1(X) * (1 + torch.erf(mlp.dense1(X) / math.sqrt(2))))  # exact GELU
    torch.testing.assert_close(mlp(X), expected)
    assert mlp.train()(X).eq(0).any()  # the last dropout, in training


def test_zero_blocks_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one block"):
        ViT(num_blks=0)


@pytest.mark.slow
def test_book_size_onnx_parity(tmp_path) -> None:
    """The book-size network through ONNX Runtime (the contract suite exports the tiny one)."""
    from zoo_core import check_parity, get_model, get_spec
    from zoo_core.onnx_export import export_graph, parity_dims

    spec = get_spec("vit")
    model = get_model("vit", preset="book").eval()
    graph = spec.graph_specs("book")[0]
    export_graph(model, graph, tmp_path / graph.file, exporter=spec.onnx_exporter)
    torch.manual_seed(0)
    dims = parity_dims(graph)
    result = check_parity(model, tmp_path / graph.file, model.graph_inputs(graph.name, dims), dims=dims,
                          atol=spec.parity.atol, rtol=spec.parity.rtol, input_names=[t.name for t in graph.inputs])
    assert result.passed, str(result)
