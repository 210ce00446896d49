"""``nn.GRU``'s recurrence for training on the CPU, with backpropagation through time written out (d2l §9.7).

The same function of the same parameters as ``nn.GRU`` (PyTorch's reset-after form, gates r, z, n)::

    r = sigmoid(x_r + H W_hr^T + b_hr)    z = sigmoid(x_z + H W_hz^T + b_hz)    x_g = x W_ig^T + b_ig
    n = tanh(x_n + r * (H W_hn^T + b_hn))    H' = n + z * (H - n)        (= (1 - z) * n + z * H)

Why: at the book's sizes (batch 1024, 32 hidden units) a step is a few small kernels, and ``nn.GRU`` on the CPU runs
its loop through autograd: some fifteen nodes a step backwards, the recurrent weights' gradient accumulated in 32
small products. Here the backward pass is one loop of its own, each step a handful of kernels and the recurrent
weights' gradient accumulated in two products while the step's tensors are in cache. What made the difference on this
machine is the layout: every tensor is *gate-major*, ``(3, num_steps, batch, h)`` (or ``(3, batch, h)`` for one step),
so that every gate's slice that a kernel reads or writes is contiguous; slicing the gates out of ``(batch, 3h)`` rows
(PyTorch's layout) made the same kernels slower than autograd. The first layer's input gates are gathered from token
indices (rows of ``W_ih^T + b_ih``: one-hot inputs without the one-hot tensor). Measured on two busy cores, one
thread, CPU time of a whole training step of the book presets, paired with the same step over ``nn.GRU``: ``gru-lm``
1.22-1.32x faster; ``deep-rnn-lm`` 0.99-1.14x (its second layer's input product costs about what the recurrence
saves). Then, on an idle machine, paired with that version (median of 12 rounds of 5 steps): `GateInputs` (its own
backward) and every step's views made in one ``unbind`` per tensor took ``gru-lm`` from 57.1 to 49.8 ms a step,
``deep-rnn-lm`` from 115.2 to 102.1 ms. On an AMD EPYC (AVX2; paired, one step alternating, 40 rounds): the recurrent
weights' gradient accumulated step by step rather than as one product over all steps after the loop, ``deep-rnn-lm``
1.06x and ``gru-lm`` 1.065x faster a step; the candidate's tanh as `zoo_core.fast_math.tanh_`, which that CPU needs.
On an AMD EPYC with AVX-512 (paired, 12 rounds of 8 steps): the r and z recurrent biases folded into the input gates
(`input_bias`, as `zoo_modern_rnn.gru_train` does), so that r and z are one ``baddbmm`` with the input gates as its
addend and ``H W_hn^T + b_hn`` one ``addmm`` written where backward reads it, and each step's output gradient taken
in as the first product's addend: ``gru-lm`` 35.1 -> 32.0 ms a step, ``deep-rnn-lm`` 64.4 -> 62.0 ms. Tried there
and not kept: a *feature-major* layout (every step's tensors (h, batch), the gates stacked as rows, so that r and z
are one plain ``W_hh[:2h] H`` product and the second layer's input gates one (96, 32) x (32, 32768) product),
slower: 86.1 against 73.0 ms a step (``deep-rnn-lm``), 44.1 against 38.6 (``gru-lm``), as MKL ran those products,
and the (96, 32768) x (32768, 28) gradient of the token table, well below their row-major counterparts; and the
token table's gradient as one ``index_add_`` per gate (rows of the gate-major tensor), 1.1-3.2 ms against 3.2-4.2
for the products on its own, no faster within a training step (paired, 20 rounds in each order: 0.8% faster, then
2.1% slower).

The language models use it in training on the CPU only (`zoo_modern_rnn.language_models`); evaluation, prediction,
export and CUDA (cuDNN) keep ``nn.GRU`` itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from zoo_core.fast_math import tanh_
from zoo_modern_rnn.gru_train import input_bias

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # grad * y * (1 - y): one kernel, into grad_input
_tanh_backward = torch.ops.aten.tanh_backward.grad_input        # grad * (1 - y^2): one kernel, into grad_input


class GRURecurrence(torch.autograd.Function):
    """One GRU layer over whole sequences from the input gates ``XW`` (3, num_steps, batch, h), in which the r and z
    recurrent biases are folded (``x W_ig^T + b_ig``, plus ``b_hg`` for g = r, z: `input_bias`): ``outputs``
    (num_steps, batch, h) from the initial state ``H0`` (batch, h), with ``nn.GRU``'s ``W_hh`` (3h, h) and the n
    gate's recurrent bias ``b_hn`` (h,), the one that r multiplies."""

    @staticmethod
    def forward(ctx: Any, XW: Tensor, H0: Tensor, W_hh: Tensor, b_hn: Tensor) -> Tensor:
        _, T, B, h = XW.shape
        W = W_hh.view(3, h, h).transpose(1, 2)  # gate g's recurrent term: H @ W[g]
        W_rz, W_n = W[:2], W[2]
        RZ = XW.new_empty(T, 2, B, h)           # r and z of every step (after the sigmoid), step-major: a step's
                                                # pair is one contiguous (2, B, h) baddbmm output
        N = XW.new_empty(T, B, h)               # n
        HN = XW.new_empty(T, B, h)              # H W_hn^T + b_hn, which r multiplies
        Hs = XW.new_empty(T + 1, B, h)          # Hs[0] = H0, Hs[t + 1] = H_t: the outputs and every H_{t-1}
        Hs[0] = H0
        # every step's views, made in one call per tensor rather than a few slices per step
        X_rz, X_n, rz_t, r_t, z_t = XW[:2].unbind(1), XW[2].unbind(0), RZ.unbind(0), RZ[:, 0], RZ[:, 1]
        r_t, z_t, N_t, HN_t, H_t = r_t.unbind(0), z_t.unbind(0), N.unbind(0), HN.unbind(0), Hs.unbind(0)
        for t in range(T):
            H = H_t[t]
            # r, z: the input gates are the product's addend (one kernel, no (3, B, h) product to add and copy)
            torch.baddbmm(X_rz[t], H.expand(2, B, h), W_rz, out=rz_t[t]).sigmoid_()
            torch.addmm(b_hn, H, W_n, out=HN_t[t])                                 # written where backward reads it
            n = tanh_(torch.addcmul(X_n[t], r_t[t], HN_t[t], out=N_t[t]))
            torch.lerp(n, H, z_t[t], out=H_t[t + 1])                                # n + z (H - n)
        ctx.save_for_backward(W_hh, Hs, RZ, N, HN)
        return Hs[1:]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, d_outputs: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        W_hh, Hs, RZ, N, HN = ctx.saved_tensors
        T, B, h = N.shape
        W = W_hh.view(3, h, h)                  # dH_{t-1} gets dgh_g @ W[g] from each gate
        dXW = N.new_empty(3, T, B, h)           # d of the input gates (pre-activation): r, z, n
        dHN = N.new_empty(T, B, h)              # d of H W_hn^T + b_hn: dn_pre * r
        tmp = N.new_empty(B, h)
        # the recurrent weights' gradient, sum_t dgh_t^T H_{t-1}, accumulated step by step while the step's tensors
        # are in cache: one product over all steps read them all again from memory, 5-6% slower a training step
        dW_hh = N.new_zeros(3, h, h)
        dW_rz, dW_n = dW_hh[:2], dW_hh[2]
        W_r, W_z, W_n = W.unbind(0)
        r_t, z_t, rz_t = RZ[:, 0].unbind(0), RZ[:, 1].unbind(0), RZ.unbind(0)  # every step's views, as in forward
        N_t, HN_t, H_t, d_out = N.unbind(0), HN.unbind(0), Hs.unbind(0), d_outputs.unbind(0)
        d_r, d_z, d_n, d_rz_t, d_HN = dXW[0].unbind(0), dXW[1].unbind(0), dXW[2].unbind(0), dXW[:2].unbind(1), \
            dHN.unbind(0)
        dH = d_out[T - 1]                       # dL/dH_t, read only: the next one is a new tensor
        for t in range(T - 1, -1, -1):
            n, H = N_t[t], H_t[t]                                                  # H: H_{t-1}
            _tanh_backward(torch.addcmul(dH, dH, z_t[t], value=-1, out=tmp), n, grad_input=d_n[t])  # dH (1-z) (1-n^2)
            torch.mul(d_n[t], r_t[t], out=d_HN[t])
            torch.mul(d_n[t], HN_t[t], out=d_r[t])                                 # d r
            torch.mul(dH, torch.sub(H, n, out=tmp), out=d_z[t])                    # d z: dH (H_{t-1} - n)
            _sigmoid_backward(d_rz_t[t], rz_t[t], grad_input=d_rz_t[t])
            dW_rz.baddbmm_(d_rz_t[t].transpose(1, 2), H.expand(2, B, h))           # (2, h, h)
            dW_n.addmm_(d_HN[t].t(), H)
            # dL/dH_{t-1}: through the gates and z, plus the output's own gradient at t - 1 as the first addend
            dH = (torch.addmm(d_out[t - 1], d_r[t], W_r) if t else torch.mm(d_r[t], W_r)) \
                .addmm_(d_z[t], W_z).addmm_(d_HN[t], W_n).addcmul_(dH, z_t[t])
        return dXW, (dH if ctx.needs_input_grad[1] else None), dW_hh.view(3 * h, h), dHN.view(T * B, h).sum(0)


class GateInputs(torch.autograd.Function):
    """Every step's input gates, gate-major: ``inputs W_ig^T + b_ig`` as (3, N, h), from inputs (N, num_inputs)
    float, or from token indices (N,) int64 standing for their one-hot vectors, with ``nn.GRU``'s ``W_ih`` (3h,
    num_inputs) and ``b_ih`` (3h,).

    Tokens: forward gathers rows of ``W_ig^T + b_ig`` (the product's sums without the one-hot tensor); backward sums
    each token's gradient rows into its row as ``one_hot^T dXW_g``, three (V, N) x (N, h) products, which cost less
    here than the ``index_add_`` that autograd does for the gather (3.2 against 5.3 ms for the book's batch of 32,768
    tokens). Floats (a deeper layer's input): three products into the gate-major slices, and in backward the input's
    gradient accumulated over the gates (no (3, N, num_inputs) intermediate to sum, as a batched product makes)."""

    @staticmethod
    def forward(ctx: Any, inputs: Tensor, W_ih: Tensor, b_ih: Tensor) -> Tensor:
        h = W_ih.shape[0] // 3
        W = W_ih.view(3, h, -1)
        ctx.save_for_backward(inputs, W_ih)
        if inputs.dtype == torch.int64:
            return (W.transpose(1, 2) + b_ih.view(3, 1, h)).index_select(1, inputs)
        XW = inputs.new_empty(3, len(inputs), h)
        for g in range(3):
            torch.addmm(b_ih[g * h:(g + 1) * h], inputs, W[g].t(), out=XW[g])
        return XW

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dXW: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        inputs, W_ih = ctx.saved_tensors
        h = W_ih.shape[0] // 3
        W = W_ih.view(3, h, -1)
        if inputs.dtype == torch.int64:
            one_hot = torch.eye(W.shape[2], dtype=dXW.dtype, device=dXW.device).index_select(0, inputs)  # (N, V)
            d_table = torch.stack([torch.mm(one_hot.t(), dXW[g]) for g in range(3)])              # (3, V, h)
            return None, d_table.transpose(1, 2).reshape(3 * h, -1), d_table.sum(1).view(3 * h)
        d_inputs = None
        if ctx.needs_input_grad[0]:
            d_inputs = torch.mm(dXW[0], W[0]).addmm_(dXW[1], W[1]).addmm_(dXW[2], W[2])
        dW = torch.cat([torch.mm(dXW[g].t(), inputs) for g in range(3)])
        return d_inputs, dW, dXW.sum(1).view(3 * h)


def gate_inputs(inputs: Tensor, W_ih: Tensor, b_ih: Tensor) -> Tensor:
    """Every step's input gates, gate-major: (3, N, h) ``inputs W_ig^T + b_ig`` from inputs (N, num_inputs), or from
    token indices (N,) int64 standing for their one-hot vectors (see `GateInputs`)."""
    return GateInputs.apply(inputs, W_ih, b_ih)


def gru_forward(rnn: nn.GRU, inputs: Tensor) -> Tensor:
    """``rnn(inputs)[0]`` (time-major, from the zero state) through `GRURecurrence`, layer by layer: inputs
    (num_steps, batch, num_inputs), or token indices (num_steps, batch) int64 for one-hot inputs -> outputs
    (num_steps, batch, num_hiddens). Unidirectional, without dropout."""
    if rnn.bidirectional or rnn.batch_first or (rnn.dropout and rnn.training) or not rnn.bias:
        raise ValueError(f"gru_forward runs unidirectional, time-major GRUs with biases and no dropout, not {rnn}")
    (T, B), h = inputs.shape[:2], rnn.hidden_size
    outputs = inputs.reshape(T * B) if inputs.dtype == torch.int64 else inputs.reshape(T * B, -1)
    for k in range(rnn.num_layers):
        W_ih, b_ih, W_hh, b_hh = (getattr(rnn, f"{name}_l{k}") for name in
                                  ("weight_ih", "bias_ih", "weight_hh", "bias_hh"))
        XW = gate_inputs(outputs, W_ih, input_bias(b_ih, b_hh)).view(3, T, B, h)
        outputs = GRURecurrence.apply(XW, XW.new_zeros(B, h), W_hh, b_hh[2 * h:]).reshape(T * B, h)
    return outputs.view(T, B, h)


__all__ = ["GRURecurrence", "GateInputs", "gate_inputs", "gru_forward"]
