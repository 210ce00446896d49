"""The chapter 11 blocks against hand computations, the book's own (bmm, boolean-index) forms and PyTorch's."""

import math

import pytest
import torch
import torch.nn.functional as F

from zoo_attention.blocks import (
    AddNorm, AdditiveAttention, DotProductAttention, MultiHeadAttention, PatchEmbedding, PositionalEncoding,
    PositionWiseFFN, TransformerDecoderBlock, TransformerEncoderBlock, attention_bias, masked_softmax,
)


def book_masked_softmax(X, valid_lens):
    """d2l 1.0.3's masked_softmax, transcribed (boolean-index assignment and all)."""
    if valid_lens is None:
        return F.softmax(X, dim=-1)
    shape = X.shape
    valid_lens = torch.repeat_interleave(valid_lens, shape[1]) if valid_lens.dim() == 1 else valid_lens.reshape(-1)
    X = X.reshape(-1, shape[-1]).clone()
    mask = torch.arange(shape[-1])[None, :] < valid_lens[:, None]
    X[~mask] = -1e6
    return F.softmax(X.reshape(shape), dim=-1)


def book_multihead(mha, queries, keys, values, valid_lens):
    """d2l 1.0.3's MultiHeadAttention.forward with the same weights: (batch * heads) rows through bmm."""
    def transpose_qkv(X):
        X = X.reshape(X.shape[0], X.shape[1], mha.num_heads, -1).permute(0, 2, 1, 3)
        return X.reshape(-1, X.shape[2], X.shape[3])

    q, k, v = transpose_qkv(mha.W_q(queries)), transpose_qkv(mha.W_k(keys)), transpose_qkv(mha.W_v(values))
    if valid_lens is not None:
        valid_lens = torch.repeat_interleave(valid_lens, repeats=mha.num_heads, dim=0)
    weights = book_masked_softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.shape[-1]), valid_lens)
    out = torch.bmm(weights, v)
    out = out.reshape(-1, mha.num_heads, out.shape[1], out.shape[2]).permute(0, 2, 1, 3)
    return mha.W_o(out.reshape(out.shape[0], out.shape[1], -1))


def test_masked_softmax_by_hand():
    X = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    w = masked_softmax(X, torch.tensor([2]))
    e = math.exp(1.0)
    assert torch.allclose(w, torch.tensor([[[1 / (1 + e), e / (1 + e), 0.0, 0.0]]]))


@pytest.mark.parametrize("valid_lens", [torch.tensor([2, 3]), torch.tensor([[1, 3], [2, 4]]), None])
def test_masked_softmax_equals_the_books(valid_lens):
    X = torch.rand(2, 2, 4)
    assert torch.allclose(masked_softmax(X, valid_lens), book_masked_softmax(X, valid_lens))


def test_masked_softmax_zero_valid_length_is_uniform_not_nan():
    w = masked_softmax(torch.randn(2, 3, 5), torch.tensor([0, 2]))
    assert not w.isnan().any()
    assert torch.allclose(w[0], torch.full((3, 5), 0.2))
    assert (w[1, :, 2:] == 0).all()


def test_masked_softmax_4d_broadcasts_over_heads():
    X = torch.randn(2, 4, 3, 5)  # (b, heads, q, k)
    for valid_lens in (torch.tensor([1, 4]), torch.tensor([[1, 2, 5], [3, 3, 0]])):
        w = masked_softmax(X, valid_lens)
        for h in range(4):
            assert torch.allclose(w[:, h], book_masked_softmax(X[:, h], valid_lens))


def test_dot_product_attention_by_hand():
    attention = DotProductAttention().eval()
    queries = torch.tensor([[[1.0, 0.0]]])
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    values = torch.tensor([[[1.0], [2.0], [3.0]]])
    out = attention(queries, keys, values, torch.tensor([2]))
    s = 1 / math.sqrt(2)  # the scores: 1/sqrt(2), 0, (masked)
    p = math.exp(s) / (math.exp(s) + 1)
    assert torch.allclose(out, torch.tensor([[[p * 1 + (1 - p) * 2]]]))
    assert torch.allclose(attention.attention_weights, torch.tensor([[[p, 1 - p, 0.0]]]))


def test_additive_attention_equals_the_books_and_precomputed_keys():
    torch.manual_seed(0)
    attention = AdditiveAttention(key_size=2, query_size=20, num_hiddens=8).eval()
    queries, keys = torch.normal(0, 1, (2, 1, 20)), torch.normal(0, 1, (2, 10, 2))
    values = torch.arange(40, dtype=torch.float32).reshape(1, 10, 4).repeat(2, 1, 1)
    valid_lens = torch.tensor([2, 6])
    out = attention(queries, keys, values, valid_lens)
    features = torch.tanh(attention.W_q(queries).unsqueeze(2) + attention.W_k(keys).unsqueeze(1))
    weights = book_masked_softmax(attention.w_v(features).squeeze(-1), valid_lens)
    assert torch.allclose(out, torch.bmm(weights, values), atol=1e-5)
    assert torch.equal(attention(queries, keys, values, valid_lens, attention.project_keys(keys)), out)
    assert torch.allclose(attention.attention_weights.sum(-1), torch.ones(2, 1))


@pytest.mark.parametrize("valid_lens", [None, torch.tensor([3, 2]), torch.tensor([[1, 2, 3, 4], [4, 4, 1, 2]])])
def test_multihead_attention_equals_the_books(valid_lens):
    torch.manual_seed(0)
    mha = MultiHeadAttention(num_hiddens=16, num_heads=4).eval()
    X, Y = torch.randn(2, 4, 16), torch.randn(2, 6, 16)
    expected = book_multihead(mha, X, Y, Y, valid_lens)
    assert torch.allclose(mha(X, Y, Y, valid_lens), expected, atol=1e-5)
    mha.save_weights = True  # the explicit path, for heatmaps: the same outputs, weights kept
    assert torch.allclose(mha(X, Y, Y, valid_lens), expected, atol=1e-5)
    assert mha.attention_weights.shape == (2, 4, 4, 6)
    assert torch.allclose(mha.attention_weights.sum(-1), torch.ones(2, 4, 4))


def test_causal_attention_sees_no_future():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    X = torch.randn(1, 5, 16)
    Y = mha(X, X, X, causal=True)
    X2 = X.clone()
    X2[:, 3:] = torch.randn(1, 2, 16)  # change the future of positions 0..2
    Y2 = mha(X2, X2, X2, causal=True)
    assert torch.allclose(Y[:, :3], Y2[:, :3], atol=1e-6)
    assert not torch.allclose(Y[:, 3:], Y2[:, 3:])
    # the book's valid lengths 1..n give the same mask
    assert torch.allclose(Y, book_multihead(mha, X, X, X, torch.arange(1, 6)[None]), atol=1e-5)


def test_attention_bias_shapes_and_values():
    assert attention_bias(None, 3, 4) is None
    b = attention_bias(torch.tensor([1, 4]), 3, 4)
    assert b.shape == (2, 1, 1, 4) and b[0, 0, 0].tolist() == [0, -1e6, -1e6, -1e6] and (b[1] == 0).all()
    c = attention_bias(None, 2, 4, causal=True)  # the last 2 of 4 positions are the queries
    assert c.shape == (1, 1, 2, 4) and c[0, 0].tolist() == [[0, 0, 0, -1e6], [0, 0, 0, 0]]


def test_cached_self_attention_equals_the_causal_forward():
    torch.manual_seed(0)
    block = TransformerEncoderBlock(16, 32, 4).eval()
    X = torch.randn(2, 6, 16)
    full = block(X, causal=True)
    K = V = torch.zeros(2, 4, 0, 4)  # an empty cache: past length 0
    steps = []
    for t in range(6):
        Y, K, V = block.step(X[:, t:t + 1], K, V)
        steps.append(Y)
    assert K.shape == (2, 4, 6, 4)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    Y, _, _ = block.step(X[:, 2:], *(t[:, :, :2] for t in (K, V)))  # several new positions at once
    assert torch.allclose(Y, full[:, 2:], atol=1e-5)


def test_decoder_block_step_equals_forward():
    torch.manual_seed(0)
    block = TransformerDecoderBlock(16, 8, 4).eval()
    X, enc_outputs, valid = torch.randn(3, 5, 16), torch.randn(3, 7, 16), torch.tensor([7, 2, 4])
    full = block(X, enc_outputs, valid)
    cross_k, cross_v = block.cross_kv(enc_outputs)
    bias = attention_bias(valid, 1, 7)
    K = V = torch.zeros(3, 4, 0, 4)
    steps = []
    for t in range(5):
        Y, K, V = block.step(X[:, t:t + 1], K, V, cross_k, cross_v, bias)
        steps.append(Y)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_decoder_block_is_causal_in_eval_mode_too():
    torch.manual_seed(0)
    block = TransformerDecoderBlock(16, 8, 4).eval()
    X, enc_outputs = torch.randn(1, 4, 16), torch.randn(1, 3, 16)
    X2 = X.clone()
    X2[:, -1] += 1.0
    assert torch.allclose(block(X, enc_outputs, None)[:, :3], block(X2, enc_outputs, None)[:, :3], atol=1e-6)


def test_positional_encoding_values_offset_and_overflow():
    pe = PositionalEncoding(8, 0.0, max_len=10).eval()
    P = pe(torch.zeros(1, 10, 8))[0]
    assert torch.allclose(P[3, 0], torch.tensor(math.sin(3.0)))
    assert torch.allclose(P[3, 3], torch.tensor(math.cos(3 / 10000 ** (2 / 8))))
    assert torch.equal(pe(torch.zeros(1, 2, 8), offset=4)[0], P[4:6])
    with pytest.raises(ValueError, match="longer than the positional encoding's table"):
        pe(torch.zeros(1, 11, 8))
    with pytest.raises(ValueError, match="12 positions"):
        pe(torch.zeros(1, 2, 8), offset=10)
    assert "P" not in pe.state_dict()


def test_ffn_addnorm_and_encoder_block_are_the_books_composition():
    torch.manual_seed(0)
    ffn = PositionWiseFFN(4, 4, 8).eval()
    X = torch.ones(2, 3, 4)
    assert ffn(X).shape == (2, 3, 8)
    add_norm = AddNorm(4, 0.5).eval()
    assert torch.allclose(add_norm(X, 2 * X), F.layer_norm(3 * X, (4,)))
    block = TransformerEncoderBlock(24, 48, 8, 0.5).eval()
    X, valid = torch.randn(2, 100, 24), torch.tensor([3, 2])
    Y = block.addnorm1(X, book_multihead(block.attention, X, X, X, valid))
    assert torch.allclose(block(X, valid), block.addnorm2(Y, block.ffn(Y)), atol=1e-5)


def test_patch_embedding_is_a_linear_map_of_each_patch():
    torch.manual_seed(0)
    embed = PatchEmbedding(img_size=8, patch_size=4, num_hiddens=5, in_channels=2)
    X = torch.randn(3, 2, 8, 8)
    Y = embed(X)
    assert embed.num_patches == 4 and Y.shape == (3, 4, 5)
    patch = X[:, :, 4:8, 0:4].reshape(3, -1)  # the third patch in row-major order
    W = embed.conv.weight.reshape(5, -1)
    assert torch.allclose(Y[:, 2], patch @ W.T + embed.conv.bias, atol=1e-5)


class _MaskedAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = MultiHeadAttention(16, 4)

    def forward(self, queries, keys, valid_lens):
        return self.mha(queries, keys, keys, valid_lens)


class _CachedStep(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pe = PositionalEncoding(16, max_len=50)
        self.block = TransformerEncoderBlock(16, 32, 4)

    def forward(self, X, past_k, past_v):
        return self.block.step(self.pe(X, offset=past_k.shape[2]), past_k, past_v)


def test_multihead_attention_and_cached_step_export_with_dynamic_sizes(tmp_path):
    """SDPA on 4-D tensors, masks from valid lengths and a cache whose length starts at 0 all go through the
    torch.export ONNX exporter and run in ONNX Runtime at sizes other than the traced ones."""
    import onnxruntime as ort
    from torch.export import Dim

    torch.manual_seed(0)
    batch, q, k, past = Dim("batch"), Dim("q"), Dim("k"), Dim("past")
    m = _MaskedAttention().eval()
    path = tmp_path / "mha.onnx"
    torch.onnx.export(m, (torch.randn(2, 3, 16), torch.randn(2, 4, 16), torch.tensor([1, 4])), str(path),
                      dynamo=True, dynamic_shapes=({0: batch, 1: q}, {0: batch, 1: k}, {0: batch}))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    args = (torch.randn(3, 5, 16), torch.randn(3, 7, 16), torch.tensor([7, 1, 3]))
    out = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)})[0]
    assert abs(out - m(*args).detach().numpy()).max() < 1e-5

    step = _CachedStep().eval()
    path = tmp_path / "step.onnx"
    torch.onnx.export(step, (torch.randn(2, 1, 16), torch.randn(2, 4, 3, 4), torch.randn(2, 4, 3, 4)), str(path),
                      dynamo=True, dynamic_shapes=({0: batch}, {0: batch, 2: past}, {0: batch, 2: past}))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    X = torch.randn(3, 6, 16)
    K = V = torch.zeros(3, 4, 0, 4)  # the run starts from an empty cache
    for t in range(6):
        feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), (X[:, t:t + 1], K, V))}
        Y_ort, K_ort, V_ort = session.run(None, feeds)
        with torch.no_grad():
            Y, K, V = step(X[:, t:t + 1], K, V)
        assert abs(Y_ort - Y.numpy()).max() < 1e-5 and K_ort.shape == tuple(K.shape)
    with pytest.raises(Exception):  # position 50 is past the table: an error, not a silent shorter slice
        big = torch.zeros(3, 4, 50, 4).numpy()
        session.run(None, {i.name: a for i, a in zip(session.get_inputs(), (X[:, :1].numpy(), big, big))})
