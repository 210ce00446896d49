"""The RNN encoder-decoder with Bahdanau attention (d2l §11.4, Bahdanau et al. 2014): English-French translation.

The book's model: chapter 10's encoder (`zoo_modern_rnn.seq2seq.Seq2SeqEncoder`: an embedding and a 2-layer GRU over
the whole padded source), and a decoder that, at every step, attends over the encoder's top-layer outputs with
additive attention (`zoo_attention.blocks.AdditiveAttention`), the query being its own top-layer hidden state from
the previous step (at the first step, the encoder's final state), the keys and values the encoder's outputs, the
padding masked (``enc_valid_lens``); the context it returns is concatenated *before* the target token's embedding
(the book's order) and fed to the decoder's GRU; a dense layer maps the top layer's outputs to the vocabulary. The
decoder starts from the encoder's final state, as in §10.7. Dropout 0.2 between GRU layers and on the attention
weights (the book's ``AdditiveAttention(num_hiddens, dropout)``). Init: `zoo_modern_rnn.seq2seq.init_seq2seq`,
Xavier-uniform on every ``nn.Linear`` and GRU weight matrix: the book's ``apply(init_seq2seq)`` runs before its
``LazyLinear`` layers (the attention's and the dense layer) have weights, so they silently keep PyTorch's default
init there; as for seq2seq, the zoo gives them the init the book's code intends.

One change of computation, none of result: the keys' projection ``W_k enc_outputs`` depends on the source only, so
it is computed once per sentence (`AdditiveAttention.project_keys`) and carried in the decoder's state, where the
book recomputes it at every step.

Training on the CPU takes a faster road to the same loss (`Bahdanau.packed_loss`, used by `training_step`; the
validation loss, the graphs and `attention_maps` use the book's forward pass):

- the rows of a batch are sorted by target length and the decoder stops each row at its last label (a packed
  sequence, as `zoo_modern_rnn.seq2seq.Seq2Seq.packed_loss` does): the work is proportional to the real target
  tokens, not to the padded length;
- the encoder is `zoo_modern_rnn.gru_train.gru_layer` (a hand-written backward pass), its first layer's input
  projection looked up in a projected embedding table; so is the embedding part of the decoder's first-layer input
  gates (``E W_ih^T + b``, one row per word);
- the decoder is one autograd node (`_AttentionDecoder`) with a hand-written backward pass: each step is a loop body
  with no host sync, the top layer's recurrent product and the attention query are one matrix product (``h [W_hh1;
  W_q]^T``), the GRU cells' gates are a few fused kernels, the attention's mask is computed once per batch; going
  backwards, each step computes only what carries the gradient to the previous step, and every weight's gradient is
  one matrix product over all steps at the end (per step, autograd would take one small product per weight and
  accumulate it, and zero-fill a full-size gradient for every slice of the encoder's outputs and keys).

Same parameters, same loss, same gradients up to float rounding; a test holds them equal to the forward pass's.
Under ``--precision bf16`` (CPU autocast) this path runs too, with bf16 operands for its matrix products and float32
everywhere else (`zoo_modern_rnn.gru_train`'s docstring); a test holds it as close to float32 as autocast's own
forward pass.

Graphs (every tensor batch-major, so beam search can reorder rows):

- ``encoder``: ``src`` int64 (batch, src_seq), ``src_valid_len`` int64 (batch,) -> ``enc_outputs`` float32 (batch,
  src_seq, num_hiddens), ``keys`` float32 (batch, src_seq, num_hiddens) (``W_k enc_outputs``), ``H`` float32 (batch,
  num_layers, num_hiddens) (the decoder's initial state), ``enc_valid_len`` int64 (batch,) (the mask's lengths).
- ``decoder_step``: ``tokens`` int64 (batch,), ``enc_outputs``, ``keys``, ``enc_valid_len`` (memory), ``H`` (state)
  -> ``logits`` float32 (batch, tgt_vocab), ``H_next``, ``attention`` float32 (batch, src_seq) (the step's attention
  weights: 0 on the padding, summing to 1 over the valid source tokens).
- ``model``: the teacher-forced forward pass ``(src, tgt_in, src_valid_len) -> logits (batch, tgt_seq, tgt_vocab)``.
  The decoder is a Python loop over the target steps, which torch.export unrolls: the target length is fixed at the
  book's ``num_steps`` (9); the batch and the source length are symbolic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_attention.blocks import MASK_VALUE, AdditiveAttention
from zoo_core.fast_math import tanh_
from zoo_modern_rnn.encoder_decoder import Decoder, EncoderDecoder, dims_or, random_tokens, random_valid_lens
from zoo_modern_rnn.gru_train import addmm, input_bias, matmul_dtype, mm
from zoo_modern_rnn.seq2seq import NUM_STEPS, Seq2SeqEncoder, dropout, init_seq2seq, packed_encoder

CROSS_ATTENTION = "decoder cross-attention"  # the name of `Bahdanau.attention_maps`'s one map


class Seq2SeqAttentionDecoder(Decoder):
    """The GRU decoder with Bahdanau attention (d2l §11.4.2, the book's ``Seq2SeqAttentionDecoder``).

    The state is ``[enc_outputs (batch, src_seq, H), keys (batch, src_seq, H), hidden_state (num_layers, batch, H),
    enc_valid_lens (batch,)]``: the book's, plus ``keys``, the attention's projection of the encoder's outputs,
    computed once in `init_state`. After `forward`, ``attention_weights`` holds one (batch, 1, src_seq) tensor per
    target step, as the book's property does.
    """

    def __init__(self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = AdditiveAttention(num_hiddens, num_hiddens, num_hiddens, dropout)
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout)
        self.dense = nn.Linear(num_hiddens, vocab_size)
        self._attention_weights: list[Tensor] = []

    def init_state(self, enc_outputs: tuple[Tensor, Tensor], enc_valid_lens: Tensor) -> list[Tensor]:
        outputs, hidden_state = enc_outputs                  # (src_seq, batch, H), (num_layers, batch, H)
        outputs = outputs.permute(1, 0, 2)                   # batch-major
        return [outputs, self.attention.project_keys(outputs), hidden_state, enc_valid_lens]

    def forward(self, X: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """``X`` (batch, tgt_seq) -> (logits (batch, tgt_seq, vocab), state after the last step)."""
        enc_outputs, keys, hidden_state, enc_valid_lens = state
        X = self.embedding(X).permute(1, 0, 2)              # (tgt_seq, batch, embed_size)
        outputs, self._attention_weights = [], []
        for x in X:
            query = hidden_state[-1].unsqueeze(1)            # (batch, 1, H)
            context = self.attention(query, enc_outputs, enc_outputs, enc_valid_lens, projected_keys=keys)
            x = torch.cat((context, x.unsqueeze(1)), dim=-1)  # (batch, 1, H + embed_size): the context first
            out, hidden_state = self.rnn(x.permute(1, 0, 2), hidden_state)
            outputs.append(out)
            self._attention_weights.append(self.attention.attention_weights)
        outputs = self.dense(torch.cat(outputs, dim=0))      # (tgt_seq, batch, vocab)
        return outputs.permute(1, 0, 2), [enc_outputs, keys, hidden_state, enc_valid_lens]

    @property
    def attention_weights(self) -> list[Tensor]:
        """The last `forward`'s attention weights, one (batch, 1, src_seq) tensor per target step."""
        return self._attention_weights


class BahdanauEncoderGraph(nn.Module):
    """The ``encoder`` graph: ``(src, src_valid_len) -> (enc_outputs, keys, H, enc_valid_len)``, batch-major."""

    def __init__(self, encoder: Seq2SeqEncoder, decoder: Seq2SeqAttentionDecoder) -> None:
        super().__init__()
        self.encoder, self.attention = encoder, decoder.attention  # the encoder and W_k go into encoder.onnx

    def forward(self, src: Tensor, src_valid_len: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        outputs, hidden_state = self.encoder(src, src_valid_len)
        outputs = outputs.transpose(0, 1)
        return outputs, self.attention.project_keys(outputs), hidden_state.transpose(0, 1), src_valid_len.clone()


class BahdanauDecoderStep(nn.Module):
    """The ``decoder_step`` graph: one step of `Seq2SeqAttentionDecoder`, ``(tokens (batch,), enc_outputs, keys,
    enc_valid_len, H (batch, num_layers, H)) -> (logits (batch, vocab), H_next, attention (batch, src_seq))``."""

    def __init__(self, decoder: Seq2SeqAttentionDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: Tensor, enc_outputs: Tensor, keys: Tensor, enc_valid_len: Tensor,
                H: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        state = [enc_outputs, keys, H.transpose(0, 1).contiguous(), enc_valid_len]
        Y, state = self.decoder(tokens[:, None], state)
        return Y[:, 0], state[2].transpose(0, 1), self.decoder.attention_weights[0][:, 0]


_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # grad * y * (1 - y), into grad_input
_tanh_backward_into = torch.ops.aten.tanh_backward.grad_input   # grad * (1 - y^2), into grad_input
_tanh_backward = torch.ops.aten.tanh_backward.default
_softmax_into = torch.ops.aten._softmax.out                      # softmax into a given tensor (a slice of a buffer)


def _dropout_mask(out: Tensor, p: float) -> Tensor:
    """`seq2seq.dropout`'s mask, drawn into `out`: 1 / (1 - p) with probability 1 - p, else 0."""
    return torch.rand(out.shape, dtype=out.dtype, device=out.device, out=out).ge_(p).mul_(1 / (1 - p))


class _AttentionDecoder(torch.autograd.Function):
    """The book's attention decoder (training mode) over a packed target, every step's arithmetic and its backward
    pass written out: the decoder's part of `Bahdanau.packed_loss`.

    Forward, at step t, for the ``n = batch_sizes[t]`` alive rows (the top layer's previous state ``h_top``)::

        [gh_top | q] = h_top [W_hh_top; W_q]^T           (one product: the top layer's recurrence and the query)
        F = tanh(q + K);  s = F w_v, masked;  a = softmax(s);  c = dropout(a) V       (additive attention)
        layer 0: gi = emb_gates + c W_c^T;  layer k > 0: gi = dropout(h_{k-1}') W_ih_k^T + b;  GRU cell (`_GRUCell`)

    Backward, from the last step to the first: per step only what the recurrence needs (the cells' gate gradients,
    the attention's, and the products that carry the gradient to the previous step's states); every weight's
    gradient is one matrix product over all steps at the end (as cuDNN and `gru_layer` do), and the gradients of the
    encoder's outputs and keys accumulate in place (no per-step slice or accumulation through autograd).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)  # float32 in; no autocast inside
    def forward(ctx, batch_sizes: Sequence[int], keep: Tensor, p_drop: float, p_att: float,  # type: ignore[override]
                mm_dtype: torch.dtype, emb_gates: Tensor, enc: Tensor, keys: Tensor, h_init: Tensor, W_c: Tensor,
                W_q: Tensor, w_v: Tensor, *weights: Tensor) -> Tensor:
        L, _, H = h_init.shape
        Ha, N, m = W_q.shape[0], emb_gates.shape[0], enc.shape[1]
        W_hh, b_hn = weights[:L], weights[L:2 * L]
        W_ih, b_in = (None, *weights[2 * L:3 * L - 1]), (None, *weights[3 * L - 1:4 * L - 2])
        W_top = torch.cat((W_hh[-1], W_q))                                     # (3 H + Ha, H)
        lp = mm_dtype  # the products' operands (`gru_train.mm`): bf16 under autocast, else float32
        W_top_t, W_c_t = W_top.to(lp).t(), W_c.to(lp).t()
        W_hh_t = [w.to(lp).t() for w in W_hh]
        W_ih_t = [None] + [w.to(lp).t() for w in W_ih[1:]]
        new = emb_gates.new_empty
        outs, rz, ghn, cand = ([new(N, H) for _ in range(L)], [new(N, 2 * H) for _ in range(L)],
                               [new(N, H) for _ in range(L)], [new(N, H) for _ in range(L)])
        xs = [None] + [new(N, H) for _ in range(1, L)]                          # the layers' dropped-out inputs
        drop = [None] + [new(N, H) if p_drop > 0 else None for _ in range(1, L)]
        Fs, A, C = new(N, m, Ha), new(N, m), new(N, H)
        AD, att_mask = (new(N, m), new(N, m)) if p_att > 0 else (A, None)
        masked = torch.full((), MASK_VALUE, dtype=emb_gates.dtype, device=emb_gates.device)
        h = list(h_init.unbind(0))
        start = 0
        for n in batch_sizes:
            sl = slice(start, start + n)
            start += n
            h = [x[:n] for x in h]
            top = torch.mm(h[-1].to(lp), W_top_t)                                   # (n, 3 H + Ha)
            F_t = tanh_(torch.add(top[:, None, 3 * H:], keys[:n], out=Fs[sl]))    # (n, m, Ha)
            scores = torch.where(keep[:n], torch.mv(F_t.view(-1, Ha), w_v).view(n, m), masked)
            _softmax_into(scores, -1, False, out=A[sl])
            if p_att > 0:
                _dropout_mask(att_mask[sl], p_att)
                torch.mul(A[sl], att_mask[sl], out=AD[sl])
            torch.bmm(AD[sl].unsqueeze(1), enc[:n], out=C[sl].unsqueeze(1))        # the context (n, H)
            for k in range(L):
                if k == 0:
                    gi = addmm(emb_gates[sl], C[sl], W_c_t, lp)
                else:
                    if p_drop > 0:
                        _dropout_mask(drop[k][sl], p_drop)
                        torch.mul(outs[k - 1][sl], drop[k][sl], out=xs[k][sl])
                    else:
                        xs[k][sl] = outs[k - 1][sl]
                    gi = addmm(b_in[k], xs[k][sl], W_ih_t[k], lp)
                gh = top[:, :3 * H] if k == L - 1 else torch.mm(h[k].to(lp), W_hh_t[k])
                r_z = torch.add(gi[:, :2 * H], gh[:, :2 * H], out=rz[k][sl]).sigmoid_()
                gh_n = torch.add(gh[:, 2 * H:], b_hn[k], out=ghn[k][sl])
                n_t = tanh_(torch.addcmul(gi[:, 2 * H:], r_z[:, :H], gh_n, out=cand[k][sl]))
                torch.lerp(n_t, h[k], r_z[:, H:], out=outs[k][sl])
            h = [outs[k][sl] for k in range(L)]
        ctx.batch_sizes, ctx.p_drop, ctx.p_att, ctx.L, ctx.has_att_mask = list(batch_sizes), p_drop, p_att, L, p_att > 0
        ctx.mm_dtype = lp
        saved = [keep, enc, h_init, W_c, W_top, w_v, Fs, A, C, *W_hh, *W_ih[1:], *outs, *rz, *ghn, *cand, *xs[1:]]
        ctx.n_saved = len(saved)
        extra = [AD, att_mask] if p_att > 0 else []
        extra += drop[1:] if p_drop > 0 else []
        ctx.save_for_backward(*saved, *extra)
        return outs[-1]

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, d_out: Tensor):  # type: ignore[override]
        L, batch_sizes, lp = ctx.L, ctx.batch_sizes, ctx.mm_dtype
        tensors = ctx.saved_tensors
        keep, enc, h_init, W_c, W_top, w_v, Fs, A, C = tensors[:9]
        rest = list(tensors[9:ctx.n_saved])
        W_hh, rest = rest[:L], rest[L:]
        W_ih, rest = [None, *rest[:L - 1]], rest[L - 1:]
        outs, rz, ghn, cand, rest = rest[:L], rest[L:2 * L], rest[2 * L:3 * L], rest[3 * L:4 * L], rest[4 * L:]
        xs = [None, *rest[:L - 1]]
        extra = list(tensors[ctx.n_saved:])
        AD, att_mask = (extra[0], extra[1]) if ctx.has_att_mask else (A, None)
        drop = [None, *extra[2 if ctx.has_att_mask else 0:]] if ctx.p_drop > 0 else [None] * L
        _, b, H = h_init.shape
        Ha, N, m = W_top.shape[0] - 3 * H, A.shape[0], A.shape[1]
        W_top_lp, W_c_lp = W_top.to(lp), W_c.to(lp)
        W_hh_lp, W_ih_lp = [w.to(lp) for w in W_hh], [None] + [w.to(lp) for w in W_ih[1:]]
        new = A.new_empty
        D_gi = [new(N, 3 * H) for _ in range(L)]
        D_top = new(N, 3 * H + Ha)                                              # [d gh_top | d q]
        D_gh = [new(N, 3 * H) for _ in range(L - 1)] + [D_top[:, :3 * H]]
        dh = [h_init.new_zeros(b, H) for _ in range(L)]
        d_enc, d_keys, d_w_v = torch.zeros_like(enc), A.new_zeros(b, m, Ha), torch.zeros_like(w_v)
        starts = [0]
        for n in batch_sizes[:-1]:
            starts.append(starts[-1] + n)
        for t in reversed(range(len(batch_sizes))):
            n, s0 = batch_sizes[t], starts[t]
            sl = slice(s0, s0 + n)
            dhz = [None] * L
            d_above = None
            for k in reversed(range(L)):
                dh_t = dh[k][:n] + (d_out[sl] if k == L - 1 else d_above)
                h_prev = h_init[k, :n] if t == 0 else outs[k][starts[t - 1]:starts[t - 1] + n]
                r_z, n_t, dgi, dgh = rz[k][sl], cand[k][sl], D_gi[k][sl], D_gh[k][sl]
                torch.mul(dh_t, h_prev - n_t, out=dgi[:, H:2 * H])                   # z
                dhz[k] = dh_t * r_z[:, H:]                                             # h, directly
                _tanh_backward_into(dh_t.sub_(dhz[k]), n_t, grad_input=dgi[:, 2 * H:])      # the candidate
                torch.mul(dgi[:, 2 * H:], r_z[:, :H], out=dgh[:, 2 * H:])              # gh_n (through r)
                torch.mul(dgi[:, 2 * H:], ghn[k][sl], out=dgi[:, :H])                  # r
                _sigmoid_backward(dgi[:, :2 * H], r_z, grad_input=dgi[:, :2 * H])
                dgh[:, :2 * H] = dgi[:, :2 * H]
                if k > 0:
                    d_above = mm(dgi, W_ih_lp[k], lp)
                    if drop[k] is not None:
                        d_above.mul_(drop[k][sl])
            # the attention: c = dropout(a) V, a = softmax(masked F w_v), F = tanh(q + K)
            d_c = mm(D_gi[0][sl], W_c_lp, lp)                                          # (n, H)
            # (n, m): a product and a sum, 6x faster here than bmm's n matrix-vector products (351 -> 55 µs)
            d_ad = (enc[:n] * d_c.unsqueeze(1)).sum(2)
            d_enc[:n].baddbmm_(AD[sl].unsqueeze(2), d_c.unsqueeze(1))
            d_a = d_ad * att_mask[sl] if att_mask is not None else d_ad
            a = A[sl]
            d_s = a * (d_a - (d_a * a).sum(-1, keepdim=True))                          # 0 where masked (a = 0)
            F_t = Fs[sl]
            d_w_v.addmv_(F_t.view(-1, Ha).t(), d_s.reshape(-1))
            d_pre = _tanh_backward(d_s.unsqueeze(2) * w_v, F_t)                        # (n, m, Ha)
            d_keys[:n] += d_pre
            torch.sum(d_pre, 1, out=D_top[sl, 3 * H:])                                  # d q
            for k in range(L):  # the gradient reaching each layer's state after step t - 1
                if k == L - 1:
                    addmm(dhz[k], D_top[sl], W_top_lp, lp, out=dh[k][:n])
                else:
                    addmm(dhz[k], D_gh[k][sl], W_hh_lp[k], lp, out=dh[k][:n])
        # every weight's gradient: one product over all steps
        h_prevs = [torch.cat([h_init[k, :batch_sizes[0]]] + [outs[k][starts[t - 1]:starts[t - 1] + batch_sizes[t]]
                             for t in range(1, len(batch_sizes))]) for k in range(L)]
        d_W_top = mm(D_top.t(), h_prevs[-1].to(lp), lp)
        d_W_hh = [mm(D_gh[k].t(), h_prevs[k].to(lp), lp) for k in range(L - 1)] + [d_W_top[:3 * H]]
        d_b_hn = [D_gh[k][:, 2 * H:].sum(0) for k in range(L)]
        d_W_ih = [mm(D_gi[k].t(), xs[k].to(lp), lp) for k in range(1, L)]
        d_b_in = [D_gi[k].sum(0) for k in range(1, L)]
        d_W_c = mm(D_gi[0].t(), C.to(lp), lp)
        return (None, None, None, None, None, D_gi[0], d_enc, d_keys, torch.stack(dh), d_W_c, d_W_top[3 * H:], d_w_v,
                *d_W_hh, *d_b_hn, *d_W_ih, *d_b_in)


class Bahdanau(EncoderDecoder):
    """The book's GRU encoder-decoder with Bahdanau attention (d2l §11.4), trained with the masked loss and Adam.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes (the book's data: 194 and 214).
        embed_size, num_hiddens, num_layers, dropout: the book: 256, 256, 2, 0.2 (dropout between GRU layers and on
            the attention weights).
        lr: Adam's learning rate (the book: 0.005).
        tgt_pad: the index of ``<pad>`` in the target vocabulary, which the loss ignores (the book's data: 5).
    """

    def __init__(self, src_vocab_size: int = 194, tgt_vocab_size: int = 214, embed_size: int = 256,
                 num_hiddens: int = 256, num_layers: int = 2, dropout: float = 0.2, lr: float = 0.005,
                 tgt_pad: int = 5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = Seq2SeqEncoder(src_vocab_size, embed_size, num_hiddens, num_layers, dropout)
        self.decoder = Seq2SeqAttentionDecoder(tgt_vocab_size, embed_size, num_hiddens, num_layers, dropout)

    def init_weights(self) -> None:
        self.apply(init_seq2seq)

    # --- training ----------------------------------------------------------------------------------------------------
    def training_step(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        """The masked loss of a training batch: `packed_loss` on the CPU (in float32 or under bf16 autocast), else the
        book's forward pass."""
        if batch[0].device.type == "cpu":
            return {"loss": self.packed_loss(batch)}
        return super().training_step(batch)

    def packed_loss(self, batch: Sequence[Tensor]) -> Tensor:
        """The masked cross-entropy of the book's forward pass, ``loss(self(src, tgt_in, src_valid_len), tgt_out)``,
        computed with the work only the loss needs (see the module docstring). Dropout as in training mode."""
        src, tgt_in, src_valid_len, tgt_out = batch
        pad, num_steps = self.tgt_pad, tgt_out.shape[1]
        labels = tgt_out != pad                                                     # (batch, num_steps)
        lens = (labels * torch.arange(1, num_steps + 1, device=src.device)).amax(1)
        order = torch.argsort(lens, descending=True, stable=True)  # the loss is a mean over tokens: any row order
        src, tgt_in, tgt_out, lens = src[order], tgt_in[order], tgt_out[order], lens[order]
        src_valid_len = src_valid_len[order]
        lens_list = lens.tolist()  # the one host sync: the packed layout
        batch_sizes = [n for n in (sum(1 for n_t in lens_list if n_t > t) for t in range(num_steps)) if n > 0]
        if not batch_sizes:  # not one label: the forward pass's loss, 0 (the masked mean of nothing)
            return self.loss(self(src, tgt_in, src_valid_len), tgt_out)
        steps = len(batch_sizes)
        alive = (torch.arange(steps, device=src.device)[:, None] < lens[None, :])  # (steps, batch)
        enc_outputs, states = self.encoder_outputs(src)                           # (batch, src_seq, H), [(batch, H)]
        outputs = self.decoder_outputs(tgt_in[:, :steps], enc_outputs, states, src_valid_len, batch_sizes)
        logits = self.decoder.dense(outputs)                                        # (N, tgt_vocab)
        y = tgt_out[:, :steps].t()[alive]
        mask = (y != pad).to(logits.dtype)
        return (F.cross_entropy(logits, y, reduction="none") * mask).sum() / mask.sum().clamp(min=1)

    def encoder_outputs(self, src: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The book's encoder (training mode) on `src` (batch, src_seq): the top layer's outputs (batch, src_seq, H),
        batch-major, and each layer's final state (batch, H)."""
        outputs, states = packed_encoder(self.encoder, src, self.training)
        return outputs.view(src.shape[1], src.shape[0], -1).transpose(0, 1).contiguous(), states

    def decoder_outputs(self, tgt_in: Tensor, enc_outputs: Tensor, states: list[Tensor], enc_valid_lens: Tensor,
                        batch_sizes: list[int]) -> Tensor:
        """The book's decoder (training mode) on a packed target: `tgt_in` (batch, steps), the rows sorted by
        decreasing length, ``batch_sizes[t]`` of them alive at step t; from the encoder's outputs and final
        `states`. Returns the top layer's outputs (N, H), packed time-major (step t's alive rows, then step t+1's)."""
        rnn, att, H, E = self.decoder.rnn, self.decoder.attention, self.num_hiddens, self.embed_size
        L = self.num_layers
        W_ih0 = rnn.weight_ih_l0                                                     # (3 H, H + E): [context | emb]
        table = F.linear(self.decoder.embedding.weight, W_ih0[:, H:],
                         input_bias(rnn.bias_ih_l0, rnn.bias_hh_l0))                   # (tgt_vocab, 3 H)
        alive = (torch.arange(len(tgt_in), device=tgt_in.device)[None, :]
                 < torch.tensor(batch_sizes, device=tgt_in.device)[:, None])          # (steps, batch)
        tokens = tgt_in[:, :len(batch_sizes)].t()[alive]                            # (N,), packed time-major
        emb_gates = F.embedding(tokens, table)                                       # (N, 3 H), packed
        keys = att.project_keys(enc_outputs)                                         # (batch, src_seq, H_att)
        keep = torch.arange(enc_outputs.shape[1], device=keys.device) < enc_valid_lens[:, None]
        weights = ([getattr(rnn, f"weight_hh_l{k}") for k in range(L)]
                   + [getattr(rnn, f"bias_hh_l{k}")[2 * H:] for k in range(L)]
                   + [getattr(rnn, f"weight_ih_l{k}") for k in range(1, L)]
                   + [input_bias(getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")) for k in range(1, L)])
        p_drop = rnn.dropout if self.training else 0.0
        p_att = att.dropout.p if self.training else 0.0
        return _AttentionDecoder.apply(batch_sizes, keep, p_drop, p_att, matmul_dtype(W_ih0), emb_gates, enc_outputs,
                                       keys, torch.stack(states), W_ih0[:, :H], att.W_q.weight, att.w_v.weight[0],
                                       *weights)

    # --- graphs and attention maps -----------------------------------------------------------------------------------
    def encoder_graph(self) -> nn.Module:
        return BahdanauEncoderGraph(self.encoder, self.decoder)

    def decoder_step_graph(self) -> nn.Module:
        return BahdanauDecoderStep(self.decoder)

    @torch.no_grad()
    def attention_maps(self, src: Tensor, src_valid_len: Tensor, tgt_in: Tensor) -> dict[str, Tensor]:
        """The decoder's attention weights on one sentence (`zoo_core.attention_plot`): `src` (1, m) int64,
        `src_valid_len` (1,), `tgt_in` (1, n) (``<bos>`` then the translation) -> ``{"decoder cross-attention":
        (1, n, valid)}`` (one head; query i is the step that reads ``tgt_in[:, i]``; the keys are the first
        ``src_valid_len`` source tokens, the padding's weights being 0). The book's encoder reads the padding too, so
        the weights of a translation are reproduced exactly from the padded source it was translated from (``m =
        num_steps``); from its valid tokens only, the encoder's final state (the first query) differs slightly.
        Eval mode is set here."""
        if src.dim() != 2 or tgt_in.dim() != 2 or len(src) != 1 or len(tgt_in) != 1 or src_valid_len.shape != (1,):
            raise ValueError(f"attention_maps takes one sentence: src (1, m), src_valid_len (1,), tgt_in (1, n); got "
                             f"{tuple(src.shape)}, {tuple(src_valid_len.shape)}, {tuple(tgt_in.shape)}")
        valid = int(src_valid_len[0])
        if not 0 < valid <= src.shape[1]:
            raise ValueError(f"attention_maps: src_valid_len {valid} is not in 1..{src.shape[1]} (the source's length)")
        self.eval()
        self(src, tgt_in, src_valid_len)
        return {CROSS_ATTENTION: torch.cat(self.decoder.attention_weights, dim=1)[..., :valid].clone()}

    def graph_inputs(self, name: str, dims: Mapping[str, int]) -> tuple[Tensor, ...]:
        batch_size = dims_or(dims, "batch", 2)
        src_steps = dims_or(dims, "src_seq", NUM_STEPS)
        if name == "model":
            return (random_tokens(self.src_vocab_size, batch_size, src_steps),
                    random_tokens(self.tgt_vocab_size, batch_size, NUM_STEPS),
                    random_valid_lens(batch_size, src_steps))
        if name == "encoder":
            return random_tokens(self.src_vocab_size, batch_size, src_steps), random_valid_lens(batch_size, src_steps)
        if name == "decoder_step":
            H = self.num_hiddens
            return (random_tokens(self.tgt_vocab_size, batch_size), torch.randn(batch_size, src_steps, H),
                    torch.randn(batch_size, src_steps, H), random_valid_lens(batch_size, src_steps),
                    torch.randn(batch_size, self.num_layers, H))
        return super().graph_inputs(name, dims)
