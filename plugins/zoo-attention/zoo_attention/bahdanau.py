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
- each decoder step is one loop body with no host sync: the top layer's recurrent product and the attention query
  are one matrix product (``h [W_hh1; W_q]^T``), the GRU cells run the fused `gru_cell` (a hand-written backward
  pass: 5 kernels forward instead of a dozen), the attention's mask is computed once per batch.

Same parameters, same loss, same gradients up to float rounding; a test holds them equal to the forward pass's.

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
from zoo_modern_rnn.encoder_decoder import Decoder, EncoderDecoder, dims_or, random_tokens, random_valid_lens
from zoo_modern_rnn.gru_train import gru_layer, input_bias
from zoo_modern_rnn.seq2seq import NUM_STEPS, Seq2SeqEncoder, dropout, init_seq2seq

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


class _GRUCell(torch.autograd.Function):
    """One GRU step from its gates (PyTorch's reset-after form, d2l §10.2), with a hand-written backward pass.

    ``gi`` (n, 3H): the input gates with the r and z recurrent biases folded in; ``gh`` (n, 3H): ``h W_hh^T`` (no
    bias); ``b_hn`` (H,). Returns h' (n, H)::

        r, z = sigmoid(gi_rz + gh_rz);  n = tanh(gi_n + r (gh_n + b_hn));  h' = n + z (h - n)
    """

    @staticmethod
    def forward(ctx, gi: Tensor, gh: Tensor, h: Tensor, b_hn: Tensor) -> Tensor:  # type: ignore[override]
        H = h.shape[1]
        rz = torch.add(gi[:, :2 * H], gh[:, :2 * H]).sigmoid_()
        gh_n = gh[:, 2 * H:] + b_hn
        n = torch.addcmul(gi[:, 2 * H:], rz[:, :H], gh_n).tanh_()
        h_new = torch.lerp(n, h, rz[:, H:])
        ctx.save_for_backward(h, rz, gh_n, n)
        return h_new

    @staticmethod
    def backward(ctx, d_h: Tensor):  # type: ignore[override]
        h, rz, gh_n, n = ctx.saved_tensors
        H = h.shape[1]
        r, z = rz[:, :H], rz[:, H:]
        d_gi = d_h.new_empty(len(d_h), 3 * H)
        d_gh = d_h.new_empty(len(d_h), 3 * H)
        torch.mul(d_h, h - n, out=d_gi[:, H:2 * H])                              # z: dh' (h - n)
        d_hz = d_h * z                                                           # h: dh' z
        torch.ops.aten.tanh_backward.grad_input(d_h - d_hz, n, grad_input=d_gi[:, 2 * H:])  # n: dh' (1 - z)(1 - n^2)
        torch.mul(d_gi[:, 2 * H:], r, out=d_gh[:, 2 * H:])                        # gh_n: dn r
        torch.mul(d_gi[:, 2 * H:], gh_n, out=d_gi[:, :H])                         # r: dn gh_n
        torch.ops.aten.sigmoid_backward.grad_input(d_gi[:, :2 * H], rz, grad_input=d_gi[:, :2 * H])
        d_gh[:, :2 * H] = d_gi[:, :2 * H]
        d_b_hn = d_gh[:, 2 * H:].sum(0) if ctx.needs_input_grad[3] else None
        return d_gi, d_gh, d_hz, d_b_hn


def gru_cell(gi: Tensor, gh: Tensor, h: Tensor, b_hn: Tensor) -> Tensor:
    """One GRU step (see `_GRUCell`): the input gates `gi` (r, z biases folded in), ``gh = h W_hh^T``, h, b_hn."""
    return _GRUCell.apply(gi, gh, h, b_hn)


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
        """The masked loss of a training batch: `packed_loss` on the CPU (no autocast), else the book's forward
        pass."""
        if batch[0].device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
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
        rnn, (batch_size, num_steps) = self.encoder.rnn, src.shape
        table = F.linear(self.encoder.embedding.weight, rnn.weight_ih_l0,
                         input_bias(rnn.bias_ih_l0, rnn.bias_hh_l0))                  # (src_vocab, 3 H)
        gi = F.embedding(src.t().reshape(-1), table)                                # (src_seq * batch, 3 H)
        states, outputs = [], gi
        for layer in range(self.num_layers):
            if layer > 0:
                x = dropout(outputs, rnn.dropout, self.training)
                gi = F.linear(x, getattr(rnn, f"weight_ih_l{layer}"), input_bias(getattr(rnn, f"bias_ih_l{layer}"),
                                                                                 getattr(rnn, f"bias_hh_l{layer}")))
            outputs, h = gru_layer(gi, None, getattr(rnn, f"weight_hh_l{layer}"),
                                   getattr(rnn, f"bias_hh_l{layer}"), [batch_size] * num_steps)
            states.append(h)
        return outputs.view(num_steps, batch_size, -1).transpose(0, 1).contiguous(), states

    def decoder_outputs(self, tgt_in: Tensor, enc_outputs: Tensor, states: list[Tensor], enc_valid_lens: Tensor,
                        batch_sizes: list[int]) -> Tensor:
        """The book's decoder (training mode) on a packed target: `tgt_in` (batch, steps), the rows sorted by
        decreasing length, ``batch_sizes[t]`` of them alive at step t; from the encoder's outputs and final
        `states`. Returns the top layer's outputs (N, H), packed time-major (step t's alive rows, then step t+1's)."""
        rnn, att, H, E = self.decoder.rnn, self.decoder.attention, self.num_hiddens, self.embed_size
        L, p = self.num_layers, rnn.dropout
        W_ih0 = rnn.weight_ih_l0                                                     # (3 H, H + E): [context | emb]
        table = F.linear(self.decoder.embedding.weight, W_ih0[:, H:],
                         input_bias(rnn.bias_ih_l0, rnn.bias_hh_l0))                   # (tgt_vocab, 3 H)
        emb_gates = F.embedding(tgt_in.t(), table)                                   # (steps, batch, 3 H)
        W_c = W_ih0[:, :H]                                                           # the context's input weights
        W_hh = [getattr(rnn, f"weight_hh_l{k}") for k in range(L)]
        b_hn = [getattr(rnn, f"bias_hh_l{k}")[2 * H:] for k in range(L)]
        b_in = [None] + [input_bias(getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")) for k in range(1, L)]
        W_top = torch.cat((W_hh[-1], att.W_q.weight))                                # (3 H + H_att, H): h -> gh, query
        w_v = att.w_v.weight[0]                                                      # (H_att,)
        keys = att.project_keys(enc_outputs)                                         # (batch, src_seq, H_att)
        keep = torch.arange(enc_outputs.shape[1], device=keys.device) < enc_valid_lens[:, None]
        masked = torch.full((), MASK_VALUE, dtype=keys.dtype, device=keys.device)
        p_att = att.dropout.p if self.training else 0.0
        h = list(states)
        outputs = []
        for t, n in enumerate(batch_sizes):
            h = [s[:n] for s in h]
            top = h[-1] @ W_top.t()                                                  # (n, 3 H + H_att)
            features = torch.tanh(top[:, None, 3 * H:] + keys[:n])                  # (n, src_seq, H_att)
            scores = torch.where(keep[:n], features @ w_v, masked)                   # (n, src_seq)
            weights = dropout(scores.softmax(-1), p_att, self.training)
            context = torch.bmm(weights[:, None], enc_outputs[:n])[:, 0]             # (n, H)
            gi = torch.addmm(emb_gates[t, :n], context, W_c.t())                     # (n, 3 H)
            new = []
            for k in range(L):
                if k > 0:
                    gi = F.linear(dropout(new[-1], p, self.training), getattr(rnn, f"weight_ih_l{k}"), b_in[k])
                gh = top[:, :3 * H] if k == L - 1 else h[k] @ W_hh[k].t()
                new.append(gru_cell(gi, gh, h[k], b_hn[k]))
            h = new
            outputs.append(h[-1])
        return torch.cat(outputs)

    # --- graphs and attention maps -----------------------------------------------------------------------------------
    def encoder_graph(self) -> nn.Module:
        return BahdanauEncoderGraph(self.encoder, self.decoder)

    def decoder_step_graph(self) -> nn.Module:
        return BahdanauDecoderStep(self.decoder)

    @torch.no_grad()
    def attention_maps(self, src: Tensor, src_valid_len: Tensor, tgt_in: Tensor) -> dict[str, Tensor]:
        """The decoder's attention weights on one sentence (`zoo_core.attention_plot`): `src` (1, m) int64,
        `src_valid_len` (1,), `tgt_in` (1, n) (``<bos>`` then the translation) -> ``{"decoder cross-attention":
        (1, n, m)}`` (one head; query i is the step that reads ``tgt_in[:, i]``). Eval mode is set here."""
        if src.dim() != 2 or tgt_in.dim() != 2 or len(src) != 1 or len(tgt_in) != 1 or src_valid_len.shape != (1,):
            raise ValueError(f"attention_maps takes one sentence: src (1, m), src_valid_len (1,), tgt_in (1, n); got "
                             f"{tuple(src.shape)}, {tuple(src_valid_len.shape)}, {tuple(tgt_in.shape)}")
        self.eval()
        self(src, tgt_in, src_valid_len)
        return {CROSS_ATTENTION: torch.cat(self.decoder.attention_weights, dim=1).clone()}  # (1, n, m)

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
