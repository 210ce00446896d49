"""Bidirectional RNNs (d2l §10.4): a forward RNN and a backward RNN over the reversed sequence, outputs concatenated.

Two public blocks with the same call and the same shapes, so that one replaces the other (the seq2seq encoder's
``bidirectional`` option uses them)::

    from zoo_modern_rnn.bidirectional import BiGRU, BiRNNScratch, merge_directions

    rnn = BiGRU(num_inputs, num_hiddens, num_layers=2, dropout=0.2)       # concise: nn.GRU(bidirectional=True)
    rnn = BiRNNScratch(num_inputs, num_hiddens, num_layers=2, dropout=0.2, cell="gru", reset_after=True)
    outputs, state = rnn(inputs, state=None)
    # inputs  (num_steps, batch_size, num_inputs), time-major like nn.GRU
    # outputs (num_steps, batch_size, 2 * num_hiddens): [forward H_t, backward H_t] of the top layer
    # state   (2 * num_layers, batch_size, num_hiddens): nn.GRU's h_n, rows [layer 0 forward, layer 0 backward,
    #         layer 1 forward, ...]; the forward direction's H at the last step, the backward's at the first.
    #         For cell="lstm" (scratch) a pair (H, C) of such tensors, as nn.LSTM.
    merge_directions(state)  # (num_layers, batch_size, 2 * num_hiddens): each layer's two final states side by side

``rnn.num_outputs == 2 * num_hiddens`` is the output width (the book doubles ``num_hiddens`` itself for that).
Both are built from `nn.Module`s only (no `zoo_core.Model`): an encoder owns one as a submodule.

Export: `BiGRU` exports through `zoo_core.onnx_export.export_graph` with the time axis symbolic (ONNX's ``GRU``
operator with ``direction="bidirectional"``, `zoo_core.onnx_rnn`). `BiRNNScratch` is a Python loop over time: its
export keeps the batch symbolic and fixes the length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_modern_rnn.cells import GRUScratch, LSTMScratch, load_torch_weights, make_cell, stack_state, unstack_state


class BiGRU(nn.Module):
    """The concise bidirectional GRU (d2l §10.4.2): ``nn.GRU(num_inputs, num_hiddens, num_layers, dropout=dropout,
    bidirectional=True)``. ``forward(inputs, state=None) -> (outputs, state)``, shapes in the module docstring."""

    def __init__(self, num_inputs: int, num_hiddens: int, num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_inputs, self.num_hiddens, self.num_layers = num_inputs, num_hiddens, num_layers
        self.num_outputs = 2 * num_hiddens
        self.rnn = nn.GRU(num_inputs, num_hiddens, num_layers, dropout=dropout, bidirectional=True)

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.rnn(inputs, state)


class BiRNNLayer(nn.Module):
    """One bidirectional layer from scratch (d2l §10.4.1): `f_rnn` reads the sequence forwards, `b_rnn` backwards;
    their states are separate and their outputs concatenated per time step."""

    def __init__(self, num_inputs: int, num_hiddens: int, cell: str = "gru", sigma: float = 0.01,
                 reset_after: bool = False) -> None:
        super().__init__()
        self.f_rnn = make_cell(cell, num_inputs, num_hiddens, sigma, reset_after)
        self.b_rnn = make_cell(cell, num_inputs, num_hiddens, sigma, reset_after)

    def forward(self, inputs: Tensor, f_H=None, b_H=None) -> tuple[Tensor, object, object]:
        f_outputs, f_H = self.f_rnn(inputs, f_H)                 # (num_steps, batch_size, num_hiddens)
        b_outputs, b_H = self.b_rnn(inputs.flip(0), b_H)         # step t of b_outputs is time num_steps - 1 - t
        outputs = torch.cat((f_outputs, b_outputs.flip(0)), -1)  # (num_steps, batch_size, 2 * num_hiddens)
        return outputs, f_H, b_H


class BiRNNScratch(nn.Module):
    """A bidirectional (deep) RNN from scratch: `num_layers` `BiRNNLayer`s, each reading the previous one's
    concatenated outputs, with dropout between layers as `nn.GRU`'s. ``forward(inputs, state=None) ->
    (outputs, state)``, shapes in the module docstring.

    `cell` is ``gru`` (`GRUScratch`; ``reset_after=True`` computes what `nn.GRU` does, the default is the book's
    GRU of §10.2) or ``lstm`` (`LSTMScratch`). The book's §10.4.1 builds it from two tanh `RNNScratch`; an earlier
    version of its code concatenated the backward outputs in reversed time order (``zip(f_outputs, b_outputs)``),
    which the book fixed with ``reversed(b_outputs)``: here, ``flip(0)``.
    """

    def __init__(self, num_inputs: int, num_hiddens: int, num_layers: int = 1, dropout: float = 0.0,
                 cell: str = "gru", sigma: float = 0.01, reset_after: bool = False) -> None:
        super().__init__()
        self.num_inputs, self.num_hiddens, self.num_layers, self.dropout = num_inputs, num_hiddens, num_layers, dropout
        self.cell = cell
        self.num_outputs = 2 * num_hiddens
        self.layers = nn.ModuleList([BiRNNLayer(num_inputs if i == 0 else 2 * num_hiddens, num_hiddens, cell, sigma,
                                                reset_after) for i in range(num_layers)])

    def forward(self, inputs: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        states = unstack_state(state, 2 * self.num_layers, self.cell)  # [layer 0 forward, layer 0 backward, ...]
        outputs = inputs
        for i, layer in enumerate(self.layers):
            if i > 0:
                outputs = F.dropout(outputs, self.dropout, self.training)
            outputs, states[2 * i], states[2 * i + 1] = layer(outputs, states[2 * i], states[2 * i + 1])
        return outputs, stack_state(states, self.cell)


def merge_directions(state: Tensor) -> Tensor:
    """A bidirectional state (2 * num_layers, batch, h) -> (num_layers, batch, 2 * h): per layer, [forward, backward]
    side by side (e.g. the initial state of a decoder with 2 * h hidden units)."""
    num_layers = state.shape[0] // 2
    return state.reshape(num_layers, 2, *state.shape[1:]).permute(0, 2, 1, 3).flatten(2)


def load_from_torch(scratch: BiRNNScratch, rnn: nn.GRU | nn.LSTM) -> None:
    """Copy a bidirectional `nn.GRU`/`nn.LSTM` (or a `BiGRU`'s ``.rnn``) into a `BiRNNScratch` of the same sizes
    (a GRU needs ``reset_after=True``), which then computes the same function."""
    if not rnn.bidirectional or rnn.num_layers != scratch.num_layers:
        raise ValueError(f"cannot load {rnn} into a {scratch.num_layers}-layer BiRNNScratch")
    for k, layer in enumerate(scratch.layers):
        for suffix, cell in (("", layer.f_rnn), ("_reverse", layer.b_rnn)):
            load_torch_weights(cell, *(getattr(rnn, f"{name}_l{k}{suffix}") for name in
                                       ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))


__all__ = ["BiGRU", "BiRNNLayer", "BiRNNScratch", "GRUScratch", "LSTMScratch", "load_from_torch", "merge_directions"]
