"""The encoder-decoder architecture (d2l §10.6), as the zoo `Model` that chapter 10's seq2seq and chapter 11's
attention models (Bahdanau, the Transformer) build on.

The book's interfaces, unchanged:

- `Encoder`: ``forward(X, *args) -> enc_all_outputs``;
- `Decoder`: ``init_state(enc_all_outputs, *args) -> state`` and ``forward(X, state) -> (outputs, state)``;
- `EncoderDecoder`: ``forward(enc_X, dec_X, *args)`` runs the encoder, initialises the decoder's state from its
  outputs and returns the decoder's outputs (teacher forcing: the whole target sequence at once).

What the zoo adds, once for every translation model:

- the masked cross-entropy of §10.7.4 (padding counts for nothing), token-weighted over an epoch: `batch_weight` is
  the number of non-pad target tokens, a 0-dim tensor, so the trainer adds it up without a host sync;
- Adam on ``lr`` (the book's ``Seq2Seq.configure_optimizers``);
- the two graphs that generation runs on, PyTorch or ONNX Runtime alike (`zoo_core.GraphSpec`, DESIGN §4): an
  ``encoder`` graph ``(src, src_valid_len) -> memory and initial state`` and a ``decoder_step`` graph ``(tokens,
  memory..., state...) -> (logits, new state...)``, every tensor batch-major. A subclass returns their modules from
  `encoder_graph` and `decoder_step_graph` (sharing its parameters) and their random inputs from `graph_inputs`;
- decoding: the book's `predict_step` (greedy for ``num_steps`` steps, no stop at ``<eos>``) and `translate`
  (greedy or beam search through `zoo_core.decoding`, stopping at ``<eos>``, on either runtime).

Batches are the book's ``(src, tgt_in, src_valid_len, tgt_out)``: ``src`` (batch, num_steps) source indices,
``tgt_in`` (batch, num_steps) ``<bos>`` then the target, ``src_valid_len`` (batch,) and ``tgt_out`` (batch,
num_steps) the labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zoo_core import Model
from zoo_core.seq_metrics import masked_cross_entropy

ENCODER_GRAPH = "encoder"
STEP_GRAPH = "decoder_step"


class Encoder(nn.Module):
    """The base encoder interface of the encoder-decoder architecture (d2l §10.6.1)."""

    def forward(self, X: Tensor, *args: Any) -> Any:
        raise NotImplementedError


class Decoder(nn.Module):
    """The base decoder interface of the encoder-decoder architecture (d2l §10.6.2)."""

    def init_state(self, enc_all_outputs: Any, *args: Any) -> Any:
        """The decoder's initial state from the encoder's outputs (and, e.g., the source's valid lengths)."""
        raise NotImplementedError

    def forward(self, X: Tensor, state: Any) -> tuple[Tensor, Any]:
        """``X`` (batch, num_steps) target indices -> (outputs (batch, num_steps, vocab), new state)."""
        raise NotImplementedError


class EncoderDecoder(Model):
    """The base class of the encoder-decoder architecture (d2l §10.6.3) with the seq2seq training of §10.7.

    A subclass sets ``self.encoder`` (an `Encoder`) and ``self.decoder`` (a `Decoder`), records ``tgt_pad`` (the
    target ``<pad>`` index) and ``lr`` among its hyper-parameters, and defines `encoder_graph`,
    `decoder_step_graph` and `graph_inputs` for export and decoding.
    """

    metrics: ClassVar[tuple[str, ...]] = ("loss",)
    unit: ClassVar[str] = "tokens"
    encoder: Encoder
    decoder: Decoder
    tgt_pad: int
    lr: float

    def forward(self, enc_X: Tensor, dec_X: Tensor, enc_valid_lens: Tensor) -> Tensor:
        """(batch, src_steps), (batch, tgt_steps), (batch,) -> logits (batch, tgt_steps, V). The book passes the
        valid lengths as ``*args``; named here, so that torch.export sees three tensors."""
        enc_all_outputs = self.encoder(enc_X, enc_valid_lens)
        dec_state = self.decoder.init_state(enc_all_outputs, enc_valid_lens)
        return self.decoder(dec_X, dec_state)[0]  # the decoder's outputs only

    def loss(self, Y_hat: Tensor, Y: Tensor) -> Tensor:
        """The masked cross-entropy (d2l §10.7.4): the mean over the label tokens that are not ``<pad>``."""
        return masked_cross_entropy(Y_hat, Y, self.tgt_pad)

    def batch_weight(self, batch: Sequence[Tensor]) -> Tensor:
        """The batch's non-pad target tokens (a 0-dim tensor, no host sync): what the masked loss averages over, so
        that epoch means are token-weighted, as a loss over the whole split would be."""
        return (batch[-1] != self.tgt_pad).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam (the book's ``Seq2Seq.configure_optimizers``); its fused kernel where the parameters live on the CPU
        or CUDA (one pass over each tensor instead of a dozen: the same update)."""
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        return torch.optim.Adam(self.parameters(), lr=self.lr, fused=fused)

    # --- graphs ------------------------------------------------------------------------------------------------------
    def encoder_graph(self) -> nn.Module:
        """The ``encoder`` graph's module: ``forward(src, src_valid_len)`` -> the step graph's memory and initial
        state, batch-major, in the order the `GraphSpec` declares its outputs."""
        raise NotImplementedError

    def decoder_step_graph(self) -> nn.Module:
        """The ``decoder_step`` graph's module: ``forward(tokens (batch,), *memory_and_state)`` -> ``(logits (batch,
        V), *new_state)``, batch-major."""
        raise NotImplementedError

    def graph_module(self, name: str) -> nn.Module:
        if name == ENCODER_GRAPH:
            return self.encoder_graph()
        if name == STEP_GRAPH:
            return self.decoder_step_graph()
        return super().graph_module(name)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return self.graph_inputs("model", {"batch": batch_size})

    # --- decoding ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_step(self, batch: Sequence[Tensor], num_steps: int) -> Tensor:
        """The book's greedy prediction (d2l §10.7.5, ``EncoderDecoder.predict_step``): starting from ``tgt[:, 0]``
        (``<bos>``), feed back the argmax for `num_steps` steps; returns (batch, num_steps) indices, ``<eos>`` and
        whatever follows it included (cut at ``<eos>`` when reading them). Eval mode is the caller's."""
        src, tgt, src_valid_len = batch[:3]
        enc_all_outputs = self.encoder(src, src_valid_len)
        dec_state = self.decoder.init_state(enc_all_outputs, src_valid_len)
        outputs = [tgt[:, :1]]
        for _ in range(num_steps):
            Y, dec_state = self.decoder(outputs[-1], dec_state)
            outputs.append(Y.argmax(2))
        return torch.cat(outputs[1:], 1)

    @torch.no_grad()
    def generate(self, src: Tensor, src_valid_len: Tensor, bos: int, eos: int, max_len: int, beam_size: int = 1,
                 runner: Any = None, graphs: Sequence[Any] | None = None) -> list[list[int]]:
        """Target indices for each source row, without ``<bos>``/``<eos>``: greedy (``beam_size`` 1) or beam search
        (d2l §10.8) through `zoo_core.decoding`, at most `max_len` tokens, stopping at ``<eos>``.

        `runner` drives the graphs (default: this model on PyTorch, from `graphs`, the model's `GraphSpec`\\ s,
        which a `zoo_core.decoding.OnnxRunner` of its exported files replaces). Eval mode is the caller's.
        """
        from zoo_core import decoding

        if runner is None:
            if graphs is None:
                raise ValueError("generate() needs the model's graphs (spec.graph_specs(preset)) or a runner")
            runner = decoding.TorchRunner(self, graphs)
        state = runner.start(src, src_valid_len)
        first = torch.full((len(src),), bos, dtype=torch.int64)
        if beam_size == 1:
            return decoding.greedy(runner, state, first, max_len, eos=eos)
        return decoding.beam_search(runner, state, first, max_len, beam_size, eos=eos)

    def translate(self, sentences: Sequence[str], src_vocab: Any, tgt_vocab: Any, num_steps: int,
                  beam_size: int = 1, runner: Any = None, graphs: Sequence[Any] | None = None) -> list[str]:
        """Translate raw sentences (the book's preprocessing, `zoo_core.data.fra_eng.FraEng.encode_source`): the
        target tokens joined by spaces, cut at ``<eos>`` (as the book reads its predictions)."""
        from zoo_core.data.fra_eng import FraEng
        from zoo_core.text import BOS, EOS

        src, src_valid_len = FraEng.encode_source(sentences, src_vocab, num_steps)
        out = self.generate(src, src_valid_len, tgt_vocab[BOS], tgt_vocab[EOS], num_steps, beam_size, runner, graphs)
        return [" ".join(tgt_vocab.to_tokens(ids)) for ids in out]


def random_tokens(vocab_size: int, *shape: int) -> Tensor:
    """Random token indices in ``[0, vocab_size)``, int64."""
    return torch.randint(0, vocab_size, shape, dtype=torch.int64)


def random_valid_lens(batch_size: int, num_steps: int) -> Tensor:
    """Random valid lengths in ``[1, num_steps]``, int64 (batch_size,)."""
    return torch.randint(1, num_steps + 1, (batch_size,), dtype=torch.int64)


def dims_or(dims: Mapping[str, int], name: str, default: int) -> int:
    return int(dims.get(name, default))
