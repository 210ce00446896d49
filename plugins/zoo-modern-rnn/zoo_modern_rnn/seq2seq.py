"""The RNN encoder-decoder for sequence-to-sequence learning (d2l §10.7): English-French translation with GRUs.

The book's model, exactly: the encoder embeds the source and runs a multi-layer GRU over it, padding included (the
book does not mask the source); the decoder starts from the encoder's final hidden state, and at every step feeds
its GRU the target token's embedding concatenated with the *context*, the encoder's top-layer output at the last
source step; a dense layer maps the decoder's top-layer outputs to the target vocabulary. The book's init
(``init_seq2seq``): Xavier-uniform on the dense layer's and the GRUs' weight matrices.

One book quirk is fixed rather than copied (DESIGN §7): the book's decoder uses ``nn.LazyLinear`` and calls
``apply(init_seq2seq)`` in its constructor, before the lazy layer has a weight, so its dense layer silently keeps
PyTorch's default init. Here the dense layer is an ``nn.Linear`` (its input size is ``num_hiddens``) and gets the
Xavier init the book's code intends; except under ``zoo train --rng book``, which replays the book's run and so keeps
the quirk (`Seq2Seq.init_like_book`).

Option (not in the book): ``bidirectional=True`` makes the encoder a bidirectional GRU (d2l §10.4) with
``num_hiddens // 2`` units per direction; each layer's final state is the forward direction's last state
concatenated with the backward direction's (which has read the whole sentence), so the decoder sees
``num_hiddens``-wide states exactly as with the book's encoder. The context is then the top layer's final state
rather than the top layer's output at the last step (for a one-way GRU the two are the same tensor).

Training on the CPU takes a faster road to the same loss (`Seq2Seq.packed_loss`, used by `training_step`; the
validation loss and every graph use the book's forward pass): the rows of a batch are sorted by target length and the
decoder stops each row at its last label, as a packed sequence (the outputs past it only ever meet a zero in the
masked loss); the first layers' input projections of the embeddings are looked up in a projected embedding table
(``E W_ih^T + b_ih``, one row per word, instead of one matrix product per token), the decoder's projection of the
constant context is computed once per sentence rather than at every step; and the GRU layers run `gru_layer` (a
hand-written backward pass). Same parameters, same loss, same gradients, up to float rounding; a test holds them
equal to the forward pass's. Under ``--precision bf16`` (CPU autocast) the same path runs with bf16 operands for the
products (`gru_train`'s docstring), as close to float32 as autocast's own forward pass (a test holds it).

Graphs (every tensor batch-major, so beam search can reorder rows):

- ``encoder``: ``src`` int64 (batch, src_seq), ``src_valid_len`` int64 (batch,) -> ``context`` float32 (batch,
  num_hiddens), ``H`` float32 (batch, num_layers, num_hiddens). (``src_valid_len`` is unused, as in the book.)
- ``decoder_step``: ``tokens`` int64 (batch,), ``context``, ``H`` -> ``logits`` float32 (batch, tgt_vocab),
  ``H_next``; ``H`` is the state carried from step to step, ``context`` the memory.
- ``model``: the training forward pass ``(src, tgt_in, src_valid_len) -> logits (batch, tgt_seq, tgt_vocab)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.book_rng import defer_init, dropout_mask
from zoo_modern_rnn.bidirectional import BiGRU, merge_directions
from zoo_modern_rnn.encoder_decoder import (
    Decoder, Encoder, EncoderDecoder, dims_or, random_tokens, random_valid_lens,
)
from zoo_modern_rnn.gru_train import gru_layer, input_bias

NUM_STEPS = 9  # the book's sentence length (FraEng num_steps): the default size of example inputs


def dropout(X: Tensor, p: float, training: bool) -> Tensor:
    """Dropout (d2l §5.6) as ``F.dropout``: each element kept with probability 1 - p and scaled by 1 / (1 - p);
    the mask drawn as ``uniform >= p`` (on the CPU, ``torch.rand`` is faster than ``bernoulli_``)."""
    if not training or p == 0:
        return X
    return X * torch.rand_like(X).ge_(p).mul_(1 / (1 - p))


def init_seq2seq(module: nn.Module) -> None:
    """The book's initialisation for sequence-to-sequence learning (d2l §10.7.1): Xavier-uniform on the weight of
    every ``nn.Linear`` and on every weight matrix of every ``nn.GRU`` (biases keep PyTorch's init)."""
    if type(module) is nn.Linear:
        nn.init.xavier_uniform_(module.weight)
    if type(module) is nn.GRU:
        for name in module._flat_weights_names:
            if "weight" in name:
                nn.init.xavier_uniform_(module._parameters[name])


BookMasks = tuple[int, int, Tensor, Tensor]
"""Where the rows of a packed path take nn.GRU's dropout mask from under ``--rng book`` (`book_dropout`): the mask's
steps and batch size, then each packed row's step and its row in the batch as the book ordered it."""


def book_dropout(X: Tensor, p: float, training: bool, at: BookMasks) -> Tensor:
    """`dropout` with the mask ``nn.GRU`` draws between its layers in the book's run (`zoo_core.book_rng`): one
    (num_steps, batch, H) mask for the whole batch in the book's row order, of which the packed rows of `X` (N, H)
    take theirs, ``mask[steps, rows]`` for ``(num_steps, batch, steps, rows) = at``."""
    if not training or p == 0:
        return X
    num_steps, batch_size, steps, rows = at
    return X * dropout_mask((num_steps, batch_size, X.shape[-1]), p, X.device)[steps, rows]


def packed_encoder(encoder: Seq2SeqEncoder, src: Tensor, training: bool,
                   book_rows: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
    """`Seq2SeqEncoder`'s GRU stack on `src` (batch, num_steps) through `gru_layer` (the CPU training path of seq2seq
    and bahdanau): the first layer's input projections looked up in a projected embedding table, dropout between
    layers as ``nn.GRU`` in training mode. Returns the top layer's outputs (num_steps * batch, num_hiddens),
    time-major, and each layer's final state (batch, num_hiddens). `book_rows` (``--rng book``): the book's row of
    each row of `src`, whose dropout masks are then the book's (`book_dropout`)."""
    rnn, (batch_size, num_steps) = encoder.rnn, src.shape
    at = None
    if book_rows is not None:  # time-major: packed row t * batch + r is step t of row r
        at = (num_steps, batch_size, torch.arange(num_steps, device=src.device).repeat_interleave(batch_size),
              book_rows.repeat(num_steps))
    table = F.linear(encoder.embedding.weight, rnn.weight_ih_l0, input_bias(rnn.bias_ih_l0, rnn.bias_hh_l0))
    gi = F.embedding(src.t().reshape(-1), table)                                    # (num_steps * batch, 3 H)
    states, outputs = [], gi
    for layer in range(rnn.num_layers):
        if layer > 0:
            x = (dropout(outputs, rnn.dropout, training) if at is None
                 else book_dropout(outputs, rnn.dropout, training, at))
            gi = F.linear(x, getattr(rnn, f"weight_ih_l{layer}"), input_bias(getattr(rnn, f"bias_ih_l{layer}"),
                                                                             getattr(rnn, f"bias_hh_l{layer}")))
        outputs, h = gru_layer(gi, None, getattr(rnn, f"weight_hh_l{layer}"), getattr(rnn, f"bias_hh_l{layer}"),
                               [batch_size] * num_steps)
        states.append(h)
    return outputs, states


class Seq2SeqEncoder(Encoder):
    """The RNN encoder for sequence-to-sequence learning (d2l §10.7.1): an embedding and a multi-layer GRU.

    ``forward(X, *args)`` with X (batch, num_steps) -> ``(outputs (num_steps, batch, num_hiddens), state
    (num_layers, batch, num_hiddens))``, time-major as the book's.
    """

    def __init__(self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.GRU(embed_size, num_hiddens, num_layers, dropout=dropout)

    def forward(self, X: Tensor, *args: Tensor) -> tuple[Tensor, Tensor]:
        embs = self.embedding(X.t())  # (num_steps, batch, embed_size)
        outputs, state = self.rnn(embs)  # (num_steps, batch, num_hiddens), (num_layers, batch, num_hiddens)
        return outputs, state


class BiSeq2SeqEncoder(Encoder):
    """A bidirectional variant of `Seq2SeqEncoder` (d2l §10.4 applied to §10.7's encoder; not in the book): a
    `zoo_modern_rnn.bidirectional.BiGRU` of ``num_hiddens // 2`` units per direction, its per-layer final states
    side by side (`merge_directions`), so that ``forward`` returns the shapes of `Seq2SeqEncoder`'s."""

    def __init__(self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if num_hiddens % 2:
            raise ValueError(f"a bidirectional encoder splits num_hiddens over two directions: {num_hiddens} is odd")
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = BiGRU(embed_size, num_hiddens // 2, num_layers, dropout=dropout)

    def forward(self, X: Tensor, *args: Tensor) -> tuple[Tensor, Tensor]:
        embs = self.embedding(X.t())  # (num_steps, batch, embed_size)
        outputs, state = self.rnn(embs)  # (num_steps, batch, num_hiddens), (2 * num_layers, batch, num_hiddens / 2)
        return outputs, merge_directions(state)  # state: (num_layers, batch, num_hiddens)


class Seq2SeqDecoder(Decoder):
    """The RNN decoder for sequence-to-sequence learning (d2l §10.7.2).

    The state is ``[context, hidden_state]``: the context (batch, num_hiddens) is the encoder's top-layer final
    state, which for the book's encoder is its output at the last step, ``enc_outputs[-1]``, the tensor the book's
    decoder reads from the state ``[enc_outputs, hidden_state]`` it carries; hidden_state is (num_layers, batch,
    num_hiddens).
    """

    def __init__(self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout)
        self.dense = nn.Linear(num_hiddens, vocab_size)

    @staticmethod
    def init_state(enc_all_outputs: tuple[Tensor, Tensor], *args: Tensor) -> list[Tensor]:
        enc_outputs, hidden_state = enc_all_outputs
        return [hidden_state[-1], hidden_state]  # context: the top layer's final state; the encoder's final state

    def forward(self, X: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        embs = self.embedding(X.t())  # X: (batch, num_steps) -> embs: (num_steps, batch, embed_size)
        context, hidden_state = state
        context = context.expand(embs.shape[0], -1, -1)  # broadcast to (num_steps, batch, num_hiddens)
        embs_and_context = torch.cat((embs, context), -1)
        outputs, hidden_state = self.rnn(embs_and_context, hidden_state)
        outputs = self.dense(outputs).swapaxes(0, 1)  # (batch, num_steps, vocab_size)
        return outputs, [state[0], hidden_state]


class Seq2SeqEncoderGraph(nn.Module):
    """The ``encoder`` graph: ``(src, src_valid_len) -> (context (batch, num_hiddens), H (batch, num_layers,
    num_hiddens))``, the decoder's initial state made batch-major."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder  # only the encoder's weights go into encoder.onnx

    def forward(self, src: Tensor, src_valid_len: Tensor) -> tuple[Tensor, Tensor]:
        context, hidden_state = Seq2SeqDecoder.init_state(self.encoder(src, src_valid_len), src_valid_len)
        return context, hidden_state.transpose(0, 1)


class Seq2SeqDecoderStep(nn.Module):
    """The ``decoder_step`` graph: one step of `Seq2SeqDecoder`, ``(tokens (batch,), context (batch, num_hiddens),
    H (batch, num_layers, num_hiddens)) -> (logits (batch, vocab), H_next (batch, num_layers, num_hiddens))``."""

    def __init__(self, decoder: Seq2SeqDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: Tensor, context: Tensor, H: Tensor) -> tuple[Tensor, Tensor]:
        Y, (_, hidden_state) = self.decoder(tokens[:, None], [context, H.transpose(0, 1).contiguous()])
        return Y[:, 0], hidden_state.transpose(0, 1)


class Seq2Seq(EncoderDecoder):
    """The book's GRU encoder-decoder for machine translation (d2l §10.7), trained with the masked loss and Adam.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes (the book's data: 194 and 214).
        embed_size, num_hiddens, num_layers, dropout: the book: 256, 256, 2, 0.2 (dropout between GRU layers).
        lr: Adam's learning rate (the book: 0.005).
        tgt_pad: the index of ``<pad>`` in the target vocabulary, which the loss ignores (the book's data: 5).
        bidirectional: a bidirectional encoder (not the book's; see the module docstring).
    """

    replays_book_rng = True  # the book's encoder (`zoo info` reads the class); False with a bidirectional one

    def __init__(self, src_vocab_size: int = 194, tgt_vocab_size: int = 214, embed_size: int = 256,
                 num_hiddens: int = 256, num_layers: int = 2, dropout: float = 0.2, lr: float = 0.005,
                 tgt_pad: int = 5, bidirectional: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        Enc = BiSeq2SeqEncoder if bidirectional else Seq2SeqEncoder
        self.encoder = Enc(src_vocab_size, embed_size, num_hiddens, num_layers, dropout)
        self.decoder = Seq2SeqDecoder(tgt_vocab_size, embed_size, num_hiddens, num_layers, dropout)
        self.replays_book_rng = not bidirectional

    def init_weights(self) -> None:
        self.apply(init_seq2seq)

    def init_like_book(self) -> None:
        """The book's draws (``zoo train --rng book``, `zoo_core.book_rng`): the encoder's embedding, its GRU and
        ``init_seq2seq`` on it, then the decoder's. The decoder's output layer is the book's ``nn.LazyLinear``, left
        with PyTorch's init (the book quirk the module docstring describes) drawn at the first training step: a
        replay of the book's run keeps it. Dropout masks are then drawn as ``nn.GRU`` draws them."""
        if not self.replays_book_rng:
            raise NotImplementedError("the bidirectional encoder is not the book's")
        for coder in (self.encoder, self.decoder):
            coder.embedding.reset_parameters()  # N(0, 1)
            coder.rnn.reset_parameters()        # U(-1/sqrt(H), 1/sqrt(H))
            init_seq2seq(coder.rnn)             # the book's apply(init_seq2seq) in each constructor
        defer_init(self.decoder.dense)
        self.book_rng = True

    # --- training ----------------------------------------------------------------------------------------------------
    def training_step(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        """The masked loss of a training batch: `packed_loss` on the CPU (the book's encoder; in float32 or under
        bf16 autocast), else the book's forward pass (on CUDA, ``nn.GRU`` runs cuDNN's fused kernels)."""
        if isinstance(self.encoder, Seq2SeqEncoder) and batch[0].device.type == "cpu":
            return {"loss": self.packed_loss(batch)}
        return super().training_step(batch)

    def packed_loss(self, batch: Sequence[Tensor]) -> Tensor:
        """The masked cross-entropy of the book's forward pass, ``loss(self(src, tgt_in, src_valid_len), tgt_out)``,
        computed with the work only the loss needs (see the module docstring). Dropout as in training mode."""
        src, tgt_in, src_valid_len, tgt_out = batch
        pad, num_steps = self.tgt_pad, tgt_out.shape[1]
        # each row's target length: up to its last label that is not <pad> (the later outputs have no loss)
        labels = tgt_out != pad                                                     # (batch, num_steps)
        lens = (labels * torch.arange(1, num_steps + 1, device=src.device)).amax(1)
        order = torch.argsort(lens, descending=True, stable=True)  # the loss is a mean over tokens: any row order
        lens = lens[order]
        lens_list = lens.tolist()
        batch_sizes = [n for n in (sum(1 for n_t in lens_list if n_t > t) for t in range(num_steps)) if n > 0]
        if not batch_sizes:  # not one label: the forward pass's loss, 0 (the masked mean of nothing)
            return self.loss(self(src, tgt_in, src_valid_len), tgt_out)
        src, tgt_in, tgt_out = src[order], tgt_in[order], tgt_out[order]
        steps = torch.arange(len(batch_sizes), device=src.device)[:, None]
        alive = steps < lens[None, :]                                               # (steps, batch)
        # encoder: every step of every row, as the book's (the padding is read)
        state = self.encoder_states(src, order if self.book_rng else None)         # [(batch, num_hiddens)] * L
        # decoder: packed, time-major (step t's alive rows are a prefix: the rows are sorted)
        tokens = tgt_in[:, :len(batch_sizes)].t()[alive]                            # (N,)
        rows = torch.arange(len(src), device=src.device).expand(len(batch_sizes), -1)[alive]
        at = (num_steps, len(src), steps.expand_as(alive)[alive], order[rows]) if self.book_rng else None
        outputs = self.decoder_outputs(tokens, rows, state, batch_sizes, at)       # (N, num_hiddens)
        logits = self.decoder.dense(outputs)                                        # (N, tgt_vocab)
        y = tgt_out[:, :len(batch_sizes)].t()[alive]
        mask = (y != pad).to(logits.dtype)
        return (F.cross_entropy(logits, y, reduction="none") * mask).sum() / mask.sum().clamp(min=1)

    def encoder_states(self, src: Tensor, book_rows: Tensor | None = None) -> list[Tensor]:
        """The book's encoder (training mode) on `src` (batch, num_steps): each layer's final state (batch,
        num_hiddens); the last is the context. `book_rows`: see `packed_encoder`."""
        return packed_encoder(self.encoder, src, self.training, book_rows)[1]

    def decoder_outputs(self, tokens: Tensor, rows: Tensor, state: list[Tensor], batch_sizes: list[int],
                        book_masks: BookMasks | None = None) -> Tensor:
        """The book's decoder (training mode) on a packed target: `tokens` (N,) and their `rows` (N,), step by step
        as `batch_sizes` says, from the encoder's `state`; the top layer's outputs (N, num_hiddens). `book_masks`
        (``--rng book``): where each token takes the book's dropout mask (`book_dropout`)."""
        rnn, E = self.decoder.rnn, self.embed_size
        W_ih0 = rnn.weight_ih_l0                                                    # (3 H, E + H): [emb | context]
        table = F.linear(self.decoder.embedding.weight, W_ih0[:, :E],
                         input_bias(rnn.bias_ih_l0, rnn.bias_hh_l0))                  # (tgt_vocab, 3 H)
        context_gates = F.linear(state[-1], W_ih0[:, E:])                           # (batch, 3 H), once per row
        gi = F.embedding(tokens, table) + context_gates.index_select(0, rows)      # (N, 3 H)
        outputs = None
        for layer in range(self.num_layers):
            if layer > 0:
                x = (dropout(outputs, rnn.dropout, self.training) if book_masks is None
                     else book_dropout(outputs, rnn.dropout, self.training, book_masks))
                gi = F.linear(x, getattr(rnn, f"weight_ih_l{layer}"), input_bias(getattr(rnn, f"bias_ih_l{layer}"),
                                                                                 getattr(rnn, f"bias_hh_l{layer}")))
            outputs, _ = gru_layer(gi, state[layer], getattr(rnn, f"weight_hh_l{layer}"),
                                   getattr(rnn, f"bias_hh_l{layer}"), batch_sizes)
        return outputs

    def encoder_graph(self) -> nn.Module:
        return Seq2SeqEncoderGraph(self.encoder)

    def decoder_step_graph(self) -> nn.Module:
        return Seq2SeqDecoderStep(self.decoder)

    def graph_inputs(self, name: str, dims: Mapping[str, int]) -> tuple[Tensor, ...]:
        batch_size = dims_or(dims, "batch", 2)
        src_steps, tgt_steps = dims_or(dims, "src_seq", NUM_STEPS), dims_or(dims, "tgt_seq", NUM_STEPS)
        if name == "model":
            return (random_tokens(self.src_vocab_size, batch_size, src_steps),
                    random_tokens(self.tgt_vocab_size, batch_size, tgt_steps),
                    random_valid_lens(batch_size, src_steps))
        if name == "encoder":
            return random_tokens(self.src_vocab_size, batch_size, src_steps), random_valid_lens(batch_size, src_steps)
        if name == "decoder_step":
            return (random_tokens(self.tgt_vocab_size, batch_size), torch.randn(batch_size, self.num_hiddens),
                    torch.randn(batch_size, self.num_layers, self.num_hiddens))
        return super().graph_inputs(name, dims)
