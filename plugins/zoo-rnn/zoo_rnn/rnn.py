"""RNN language models on The Time Machine: from scratch (d2l §9.5) and concise (d2l §9.6).

Both compute the book's model: one-hot tokens x_t, hidden state ``H_t = tanh(x_t W_xh + H_{t-1} W_hh + b_h)`` from
``H_0 = 0``, logits ``O_t = H_t W_hq + b_q``. Changes to the book's code that do not change what is computed:

- no one-hot tensors: ``one_hot(X) @ W_xh + b_h`` is the row gather ``(W_xh + b_h)[X]``, the same numbers without
  the zeros (a (V, h) sum, then one gather of the input terms of all time steps before the loop);
- the output layer is one matrix product over all time steps after the loop (the book computes it step by step),
  and the logits stay time-major: `forward` returns a (batch, seq, V) view of them, which the loss scores in place;
- the recurrent layer returns its outputs stacked in one tensor (the book returns a list).

``nn.RNN`` computes the input terms itself and so needs the one-hot input: the concise model keeps ``nn.RNN`` (its
parameters, names and initialisation) but runs its recurrence on its weights through the gather, checked equal to
``nn.RNN`` on one-hot inputs in tests/test_rnn.py. With the same weights the scratch and concise models give the same
outputs (``nn.RNN``'s second bias, b_hh, adds to b_ih as b_h).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.book_rng import defer_init
from zoo_core.fast_math import tanh_
from zoo_rnn.lm import LanguageModel


def gather_input_terms(W: Tensor, b: Tensor, X: Tensor) -> Tensor:
    """``one_hot(X) @ W + b`` without the one-hot: rows of ``W + b``. X (...) int64 -> (..., h).

    The table is made contiguous first: for a transposed W (``nn.RNN``'s ``weight_ih_l0.T``) the sum keeps W's
    column-major layout, and ``index_select`` on the rows of a column-major table took 3.8 ms for the book's batch
    of 32,768 tokens against 0.25 ms (AMD EPYC, one thread); rnn-lm's training step went 1.08x faster (paired)."""
    return (W + b).contiguous().index_select(0, X.reshape(-1)).view(*X.shape, W.shape[1])


class TanhRecurrence(torch.autograd.Function):
    """``H_t = tanh(XW_t + H_{t-1} W_hh)`` for every step of ``XW``, with backpropagation through time written out
    (d2l §9.7): the same values and gradients as autograd on the loop, in fewer, larger operations.

    Forward: the book's loop, writing each H_t into one preallocated (num_steps, batch, h) tensor (no stack), with
    `zoo_core.fast_math.tanh_` for the tanh: on an AMD EPYC, ATen's took 124 us a time step of the book's (1024, 32)
    batch, 4 of rnn-lm's 23 ms a training step, and the training step went 1.08x faster this way (paired, one
    thread).
    Backward, with ``Z_t = XW_t + H_{t-1} W_hh`` and ``dH_t`` the gradient reaching H_t from the outputs and from step
    t + 1, backwards in time::

        dZ_t = dH_t * (1 - H_t^2)                       (one kernel: tanh's derivative)
        dH_{t-1} = dOutputs_{t-1} + dZ_t W_hh^T         (one addmm: the two sources of H_{t-1}'s gradient)
        dXW = dZ,   dW_hh = sum_t H_{t-1}^T dZ_t = [H_0 .. H_{T-1}]^T [dZ_1 .. dZ_T]   (one product over all steps)

    Autograd records four or five nodes a step instead, and accumulates dW_hh in 32 small products.
    """

    @staticmethod
    def forward(ctx: Any, XW: Tensor, H0: Tensor, W_hh: Tensor) -> Tensor:  # (T, B, h), (B, h), (h, h)
        Hs = torch.empty_like(XW)
        H = H0
        for t in range(len(XW)):
            H = tanh_(torch.addmm(XW[t], H, W_hh, out=Hs[t]))
        ctx.save_for_backward(H0, W_hh, Hs)
        return Hs  # (T, B, h)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dHs: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        H0, W_hh, Hs = ctx.saved_tensors
        W_hh_T = W_hh.T
        dZ = torch.empty_like(Hs)
        dH = dHs[-1]
        for t in range(len(Hs) - 1, -1, -1):
            torch.ops.aten.tanh_backward.grad_input(dH, Hs[t], grad_input=dZ[t])
            if t > 0:
                dH = torch.addmm(dHs[t - 1], dZ[t], W_hh_T)
        h = Hs.shape[-1]
        dW_hh = torch.addmm(H0.T @ dZ[0], Hs[:-1].reshape(-1, h).T, dZ[1:].reshape(-1, h))
        dH0 = dZ[0] @ W_hh_T if ctx.needs_input_grad[1] else None
        return dZ, dH0, dW_hh


def tanh_recurrence(XW: Tensor, H: Tensor, W_hh: Tensor) -> Tensor:
    """The hidden states ``H_t = tanh(XW_t + H_{t-1} W_hh)`` of every step, (num_steps, batch, h), from ``H_0 = H``.

    When gradients are wanted, through `TanhRecurrence` (backpropagation through time by hand); otherwise the plain
    loop, which is also what torch.export traces."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (XW, H, W_hh)):
        return TanhRecurrence.apply(XW, H, W_hh)
    outputs = []
    for xw in XW:
        H = torch.tanh(torch.addmm(xw, H, W_hh))
        outputs.append(H)
    return torch.stack(outputs)


class RNNScratch(nn.Module):
    """The RNN layer from scratch (d2l §9.5.1): ``H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)``.

    Weights ``N(0, sigma^2)`` and a zero bias, as the book. Time-major, as ``nn.RNN`` (and chapter 10's scratch
    layers): ``outputs, H = layer(inputs, H)`` with inputs (num_steps, batch_size, num_inputs), outputs
    (num_steps, batch_size, num_hiddens), H (batch_size, num_hiddens).
    """

    def __init__(self, num_inputs: int, num_hiddens: int, sigma: float = 0.01) -> None:
        super().__init__()
        self.num_inputs, self.num_hiddens, self.sigma = num_inputs, num_hiddens, sigma
        self.W_xh = nn.Parameter(torch.randn(num_inputs, num_hiddens) * sigma)
        self.W_hh = nn.Parameter(torch.randn(num_hiddens, num_hiddens) * sigma)
        self.b_h = nn.Parameter(torch.zeros(num_hiddens))

    def input_weights(self) -> tuple[Tensor, Tensor]:
        """``(W_xh, b_h)``: ``X W_xh + b_h`` is the input term of every step, computed before the loop."""
        return self.W_xh, self.b_h

    def forward(self, inputs: Tensor, H: Tensor | None = None) -> tuple[Tensor, Tensor]:
        W_xh, b_h = self.input_weights()
        return self.recur(inputs @ W_xh + b_h, H)  # (num_steps, batch_size, num_hiddens)

    def recur(self, XW: Tensor, H: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The loop over time on the precomputed input terms ``XW`` (num_steps, batch_size, num_hiddens)."""
        if H is None:
            H = XW.new_zeros(XW.shape[1], self.num_hiddens)
        outputs = tanh_recurrence(XW, H, self.W_hh)  # for xw in XW: H = tanh(xw + H @ W_hh)
        return outputs, outputs[-1]


class RNNLMScratch(LanguageModel):
    """The RNN language model from scratch (d2l §9.5.2-9.5.4): `RNNScratch` on one-hot inputs (gathered rows of
    W_xh, see the module docstring) and an output layer ``H W_hq + b_q``, W_hq ~ N(0, sigma^2), b_q = 0.

    Its forward pass is a Python loop over time steps, which torch.export unrolls at the traced length: it exports
    its one-step graph only, which the decoding loop drives.
    """

    def __init__(self, vocab_size: int = 28, num_hiddens: int = 32, lr: float = 1.0, sigma: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.rnn = RNNScratch(vocab_size, num_hiddens, sigma)
        self.W_hq = nn.Parameter(torch.randn(num_hiddens, vocab_size) * sigma)
        self.b_q = nn.Parameter(torch.zeros(vocab_size))

    replays_book_rng = True

    @torch.no_grad()
    def init_like_book(self) -> None:
        """d2l's ``RNNScratch`` then ``RNNLMScratch.init_params`` (``zoo train --rng book``, `zoo_core.book_rng`):
        W_xh, W_hh, W_hq drawn ``randn(...) * sigma`` in this order, the biases zero."""
        for W in (self.rnn.W_xh, self.rnn.W_hh, self.W_hq):
            W.copy_(torch.randn(W.shape) * self.sigma)
        self.rnn.b_h.zero_()
        self.b_q.zero_()
        self.book_rng = True

    def output_layer(self, H: Tensor) -> Tensor:  # (..., num_hiddens) -> (..., vocab_size)
        return H @ self.W_hq + self.b_q

    def forward(self, X: Tensor) -> Tensor:  # (batch, num_steps) -> (batch, num_steps, vocab_size)
        XW = gather_input_terms(*self.rnn.input_weights(), X.T)  # (num_steps, batch, num_hiddens)
        outputs, _ = self.rnn.recur(XW)
        return self.output_layer(outputs).transpose(0, 1)  # time-major logits, seen batch-major

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        return (torch.zeros(batch_size, self.num_hiddens, device=device or self.device),)

    def forward_step(self, tokens: Tensor, H: Tensor) -> tuple[Tensor, Tensor]:  # (batch,), (batch, num_hiddens)
        _, H = self.rnn.recur(gather_input_terms(*self.rnn.input_weights(), tokens[None]), H)
        return self.output_layer(H), H


class RNNLM(LanguageModel):
    """The concise RNN language model (d2l §9.6): ``nn.RNN(vocab_size, num_hiddens)`` on one-hot inputs and an
    ``nn.Linear`` output layer, with PyTorch's default initialisation (as the book).

    Training runs the recurrence on ``nn.RNN``'s weights with gathered input terms (see the module docstring); the
    exported ``model`` graph is ``nn.RNN`` itself on one-hot inputs, the book's computation, which
    `zoo_core.onnx_rnn` exports as one ONNX RNN node with ``seq`` symbolic.
    """

    def __init__(self, vocab_size: int = 28, num_hiddens: int = 32, lr: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.rnn = nn.RNN(vocab_size, num_hiddens)
        self.linear = nn.Linear(num_hiddens, vocab_size)

    replays_book_rng = True

    def init_like_book(self) -> None:
        """The book's ``RNNLM`` (``zoo train --rng book``, `zoo_core.book_rng`): ``nn.RNN``'s init, then its
        ``nn.LazyLinear`` output layer's, drawn at the first forward pass."""
        self.rnn.reset_parameters()
        defer_init(self.linear)
        self.book_rng = True

    def input_terms(self, X: Tensor) -> Tensor:
        """``one_hot(X) @ W_ih^T + b_ih + b_hh``, what ``nn.RNN`` adds to ``H W_hh^T`` at each step: X (...) int64
        -> (..., num_hiddens)."""
        return gather_input_terms(self.rnn.weight_ih_l0.T, self.rnn.bias_ih_l0 + self.rnn.bias_hh_l0, X)

    def cell(self) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """One time step ``(H, xw) -> (H, H)`` with ``H = tanh(xw + H W_hh^T)``."""
        W_hh_T = self.rnn.weight_hh_l0.T

        def step(H: Tensor, xw: Tensor) -> tuple[Tensor, Tensor]:
            H = torch.tanh(torch.addmm(xw, H, W_hh_T))
            return H, H

        return step

    def forward(self, X: Tensor) -> Tensor:  # (batch, num_steps) -> (batch, num_steps, vocab_size)
        if torch.compiler.is_exporting():  # the book's nn.RNN on one-hot inputs: one ONNX RNN node, seq symbolic
            outputs, _ = self.rnn(F.one_hot(X.T, self.vocab_size).to(self.rnn.weight_ih_l0.dtype))
        else:
            XW = self.input_terms(X.T)  # (num_steps, batch, num_hiddens)
            (H,) = self.begin_state(X.shape[0], X.device)
            outputs = tanh_recurrence(XW, H, self.rnn.weight_hh_l0.T)
        return self.linear(outputs).transpose(0, 1)  # time-major logits, seen batch-major

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        return (torch.zeros(batch_size, self.num_hiddens, device=device or self.device),)

    def forward_step(self, tokens: Tensor, H: Tensor) -> tuple[Tensor, Tensor]:  # (batch,), (batch, num_hiddens)
        H, _ = self.cell()(H, self.input_terms(tokens))
        return self.linear(H), H
