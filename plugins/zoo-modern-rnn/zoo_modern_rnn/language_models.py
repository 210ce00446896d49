"""LSTM, GRU and deep GRU language models on The Time Machine (d2l §10.1-10.3), from scratch and concise.

Every model is a `zoo_rnn.lm.LanguageModel` (training loss, perplexity, the ``step`` graph, `predict`):

- from scratch (``*Scratch``): the layers of `zoo_modern_rnn.cells` and the book's output layer ``W_hq`` (N(0,
  sigma^2)), ``b_q`` (zero), as d2l's ``RNNLMScratch``; their loop over time is Python, so they export their one-step
  graph only;
- concise: ``nn.LSTM`` / ``nn.GRU`` and an ``nn.Linear`` output layer (PyTorch's initialisation, as the book's
  ``RNNLM``); they export a forward graph ``model`` (time axis symbolic) and the step graph.

Changes to the book's code that leave what is computed unchanged: the scratch models gather rows of the input
weights instead of multiplying one-hot vectors (``one_hot(X) @ W_x`` is ``W_x[X]``), compute the input terms of all
time steps before the loop and the output layer after it.

Same weights, same function: `load_concise_weights` copies a concise model into its scratch twin. The LSTMs
(one layer or stacked) then agree exactly; so do the GRUs (one layer or stacked) when the scratch GRU is built with
``reset_after=True``. The book's scratch GRU (the default) resets H before its recurrent product, ``(R * H) W_hh``,
where ``nn.GRU`` computes ``R * (H W_hn + b_hn)``: the two are different functions unless W_hn is diagonal and b_hn
zero (`zoo_modern_rnn.cells` explains; the tests show both).

Training speed: the concise GRUs train on the CPU through `zoo_modern_rnn.recurrence` (``nn.GRU``'s function and
parameters, backpropagation through time written out); the LSTMs through ``nn.LSTM`` (oneDNN's LSTM, which a
hand-written version did not beat here).

Export: the concise models' ``model`` graph is their forward pass, ``nn.LSTM``/``nn.GRU`` written as ONNX's
``LSTM``/``GRU`` operator with the time axis symbolic (`zoo_core.onnx_rnn`); their ``step`` graph is the same layer
on one step. A GRU's parity test therefore also watches ``linear_before_reset`` (PyTorch's formulation is 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.book_rng import defer_init
from zoo_modern_rnn.cells import GRUScratch, LSTMScratch, StackedRNNScratch, load_torch_weights
from zoo_modern_rnn.recurrence import gru_forward
from zoo_rnn.lm import LanguageModel


class _RecurrentLM(LanguageModel):
    """What the six models share: the state's names and layout.

    The language model's state is batch-major, one tensor per name in `state_names`: ``(batch, num_hiddens)``, or
    ``(batch, num_layers, num_hiddens)`` for the deep models (`layered`). The recurrent layer's state is its own:
    a scratch layer's ``(batch, num_hiddens)``, or PyTorch's ``(num_layers, batch, num_hiddens)`` (`stacked`);
    H alone for a GRU, the pair (H, C) for an LSTM.
    """

    cell: str = "gru"     # "gru" or "lstm"
    layered = False       # the language model's state has a layer axis
    stacked = False       # the recurrent layer's state has a layer axis (nn.GRU, StackedRNNScratch)

    @property
    def state_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("H", "C") if self.cell == "lstm" else ("H",)

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        shape = (batch_size, self.num_layers, self.num_hiddens) if self.layered else (batch_size, self.num_hiddens)
        return tuple(torch.zeros(shape, device=device or self.device) for _ in self.state_names)

    def rnn_state(self, state: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, Tensor]:
        """The language model's state -> the recurrent layer's."""
        def convert(t: Tensor) -> Tensor:
            if self.layered:
                return t.transpose(0, 1).contiguous()  # (batch, layers, h) -> (layers, batch, h)
            return t[None] if self.stacked else t
        tensors = tuple(convert(t) for t in state)
        return tensors if self.cell == "lstm" else tensors[0]

    def lm_state(self, rnn_state: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, ...]:
        """The recurrent layer's state -> the language model's."""
        def convert(t: Tensor) -> Tensor:
            if self.layered:
                return t.transpose(0, 1)  # (layers, batch, h) -> (batch, layers, h)
            return t[0] if self.stacked else t
        return tuple(convert(t) for t in (rnn_state if self.cell == "lstm" else (rnn_state,)))


# --- from scratch --------------------------------------------------------------------------------------------------

class _ScratchLM(_RecurrentLM):
    """The book's ``RNNLMScratch`` (§9.5) around a scratch layer: one-hot inputs (gathered), output layer
    ``H W_hq + b_q``."""

    def _build(self, rnn: nn.Module, vocab_size: int, num_hiddens: int, sigma: float) -> None:
        self.rnn = rnn
        self.W_hq = nn.Parameter(torch.randn(num_hiddens, vocab_size) * sigma)
        self.b_q = nn.Parameter(torch.zeros(vocab_size))

    def input_terms(self, X: Tensor) -> Tensor:
        """``one_hot(X) @ W_x + b`` of every gate as a gather: X (...) int64 -> (..., G * num_hiddens)."""
        W_x, b = self.rnn.input_weights()
        return F.embedding(X, W_x) + b

    def output_layer(self, H: Tensor) -> Tensor:  # (..., num_hiddens) -> (..., vocab_size)
        return H @ self.W_hq + self.b_q

    def forward(self, X: Tensor) -> Tensor:  # (batch, num_steps) -> (batch, num_steps, vocab_size)
        outputs, _ = self.rnn.recur(self.input_terms(X.T))  # (num_steps, batch, num_hiddens)
        return self.output_layer(outputs).transpose(0, 1)

    def _step(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        outputs, rnn_state = self.rnn.recur(self.input_terms(tokens)[None], self.rnn_state(state))
        return (self.output_layer(outputs[0]), *self.lm_state(rnn_state))


class LSTMLMScratch(_ScratchLM):
    """The LSTM language model from scratch (d2l §10.1.2): `LSTMScratch` in the book's ``RNNLMScratch``.
    State ``H``, ``C``: (batch, num_hiddens) each. Exports its step graph only (a Python loop over time)."""

    cell = "lstm"

    def __init__(self, vocab_size: int = 28, num_hiddens: int = 32, lr: float = 4.0, sigma: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._build(LSTMScratch(vocab_size, num_hiddens, sigma), vocab_size, num_hiddens, sigma)

    def forward_step(self, tokens: Tensor, H: Tensor, C: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self._step(tokens, H, C)  # type: ignore[return-value]


class GRULMScratch(_ScratchLM):
    """The GRU language model from scratch (d2l §10.2.4): `GRUScratch` in the book's ``RNNLMScratch``. State ``H``:
    (batch, num_hiddens). ``reset_after=True`` takes PyTorch's GRU form (and its bias b_hn) instead of the book's.
    Exports its step graph only (a Python loop over time)."""

    def __init__(self, vocab_size: int = 28, num_hiddens: int = 32, lr: float = 4.0, sigma: float = 0.01,
                 reset_after: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._build(GRUScratch(vocab_size, num_hiddens, sigma, reset_after), vocab_size, num_hiddens, sigma)

    def forward_step(self, tokens: Tensor, H: Tensor) -> tuple[Tensor, Tensor]:
        return self._step(tokens, H)  # type: ignore[return-value]


class DeepRNNLMScratch(_ScratchLM):
    """The deep RNN language model from scratch (d2l §10.3.1): `StackedRNNScratch` of `num_layers` GRUs (the
    book's text trains "a deep GRU"; its code stacks tanh RNNs) in the book's ``RNNLMScratch``. ``cell="lstm"``
    stacks LSTMs (the section's exercise). State ``H`` (and ``C``): (batch, num_layers, num_hiddens). Exports its
    step graph only (a Python loop over time). Its book preset draws the weights with ``sigma=0.1``: with the
    book's 0.01 the two-layer stack hardly trains in the book's 100 epochs (see plugin.py)."""

    layered = stacked = True

    def __init__(self, vocab_size: int = 28, num_hiddens: int = 32, num_layers: int = 2, lr: float = 2.0,
                 sigma: float = 0.01, cell: str = "gru", reset_after: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._build(StackedRNNScratch(vocab_size, num_hiddens, num_layers, sigma, cell, reset_after), vocab_size,
                    num_hiddens, sigma)

    def forward_step(self, tokens: Tensor, H: Tensor, C: Tensor | None = None) -> tuple[Tensor, ...]:
        return self._step(tokens, H) if C is None else self._step(tokens, H, C)


# --- concise -------------------------------------------------------------------------------------------------------

class _ConciseLM(_RecurrentLM):
    """The book's ``RNNLM`` (§9.6) around ``nn.GRU``/``nn.LSTM``: one-hot inputs, an ``nn.Linear`` output layer."""

    stacked = True

    def _build(self, vocab_size: int, num_hiddens: int, num_layers: int) -> None:
        self.rnn = (nn.LSTM if self.cell == "lstm" else nn.GRU)(vocab_size, num_hiddens, num_layers)
        self.linear = nn.Linear(num_hiddens, vocab_size)

    replays_book_rng = True

    def init_like_book(self) -> None:
        """The book's ``RNNLM`` (``zoo train --rng book``, `zoo_core.book_rng`): the ``nn.GRU``/``nn.LSTM``'s init,
        then its ``nn.LazyLinear`` output layer's, drawn at the first forward pass."""
        self.rnn.reset_parameters()
        defer_init(self.linear)
        self.book_rng = True

    hand_bptt = True
    """GRUs train on the CPU through `zoo_modern_rnn.recurrence.gru_forward`: ``self.rnn``'s function and
    parameters, backpropagation through time written out (faster here); elsewhere, and in evaluation, ``self.rnn``."""

    def one_hot(self, X: Tensor) -> Tensor:
        """Token indices (...) -> one-hot vectors (..., vocab_size) float32, as rows of the identity (one gather;
        ``F.one_hot(X).float()`` builds an int64 tensor first, ten times slower here)."""
        eye = torch.eye(self.vocab_size, device=X.device)
        return eye.index_select(0, X.reshape(-1)).view(*X.shape, self.vocab_size)

    def forward(self, X: Tensor) -> Tensor:  # (batch, num_steps) -> (batch, num_steps, vocab_size)
        if (self.cell == "gru" and self.hand_bptt and X.device.type == "cpu" and torch.is_grad_enabled()
                and not torch.compiler.is_exporting()):
            outputs = gru_forward(self.rnn, X.T)  # token indices: the input gates are gathered
        else:
            outputs, _ = self.rnn(self.one_hot(X.T))  # (num_steps, batch, num_hiddens)
        return self.linear(outputs).transpose(0, 1)  # time-major logits, seen batch-major (the loss reads them so)

    def _step(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        inputs = self.one_hot(tokens)[None]  # (1, batch, vocab_size)
        outputs, rnn_state = self.rnn(inputs, self.rnn_state(state))
        return (self.linear(outputs[0]), *self.lm_state(rnn_state))


class LSTMLM(_ConciseLM):
    """The concise LSTM language model (d2l §10.1.3): ``nn.LSTM(vocab_size, num_hiddens)`` in the book's
    ``RNNLM``. State ``H``, ``C``: (batch, num_hiddens) each."""

    cell = "lstm"

    def __init__(self, vocab_size: int = 28, num_hiddens: int = 32, lr: float = 4.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.num_layers = 1
        self._build(vocab_size, num_hiddens, 1)

    def forward_step(self, tokens: Tensor, H: Tensor, C: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self._step(tokens, H, C)  # type: ignore[return-value]


class GRULM(_ConciseLM):
    """The concise GRU language model (d2l §10.2.5): ``nn.GRU(vocab_size, num_hiddens)`` in the book's ``RNNLM``.
    State ``H``: (batch, num_hiddens)."""

    def __init__(self, vocab_size: int = 28, num_hiddens: int = 32, lr: float = 4.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.num_layers = 1
        self._build(vocab_size, num_hiddens, 1)

    def forward_step(self, tokens: Tensor, H: Tensor) -> tuple[Tensor, Tensor]:
        return self._step(tokens, H)  # type: ignore[return-value]


class DeepRNNLM(_ConciseLM):
    """The concise deep GRU language model (d2l §10.3.2): ``nn.GRU(vocab_size, num_hiddens, num_layers)`` (the
    book's ``GRU`` block) in its ``RNNLM``; ``cell="lstm"``: ``nn.LSTM``. State ``H`` (and ``C``): (batch,
    num_layers, num_hiddens)."""

    layered = True

    def __init__(self, vocab_size: int = 28, num_hiddens: int = 32, num_layers: int = 2, lr: float = 2.0,
                 cell: str = "gru") -> None:
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be gru or lstm, not {cell!r}")
        self.save_hyperparameters()
        self._build(vocab_size, num_hiddens, num_layers)

    def forward_step(self, tokens: Tensor, H: Tensor, C: Tensor | None = None) -> tuple[Tensor, ...]:
        return self._step(tokens, H) if C is None else self._step(tokens, H, C)


@torch.no_grad()
def load_concise_weights(scratch: _ScratchLM, concise: _ConciseLM) -> None:
    """Copy a concise model's weights into its scratch twin of the same sizes, which then computes the same function
    (a GRU twin needs ``reset_after=True``: the book's GRU cannot hold nn.GRU's weights)."""
    layers = list(scratch.rnn.rnns) if isinstance(scratch.rnn, StackedRNNScratch) else [scratch.rnn]
    if len(layers) != concise.rnn.num_layers or scratch.cell != concise.cell:
        raise ValueError(f"cannot copy {type(concise).__name__} into {type(scratch).__name__}: different layers")
    for k, layer in enumerate(layers):
        load_torch_weights(layer, *(getattr(concise.rnn, f"{name}_l{k}")
                                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    scratch.W_hq.copy_(concise.linear.weight.T)
    scratch.b_q.copy_(concise.linear.bias)


__all__ = ["DeepRNNLM", "DeepRNNLMScratch", "GRULM", "GRULMScratch", "LSTMLM", "LSTMLMScratch",
           "load_concise_weights"]
