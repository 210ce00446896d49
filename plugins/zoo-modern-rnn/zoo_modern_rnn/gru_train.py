"""A GRU layer for fast training on the CPU: what ``nn.GRU`` computes (d2l §10.2, PyTorch's reset-after form), with
a hand-written backward pass, and optionally over sequences of different lengths (packed).

``nn.GRU`` on the CPU runs its time loop through autograd: about a dozen small kernels per step forwards, twice as
many backwards, and one small matrix product per step for the recurrent weights' gradient. `gru_layer` keeps the
input projection outside (the caller computes it for all steps at once, or looks it up, see `seq2seq`), runs the
recurrence with six kernels per step, and in the backward pass computes the recurrent weights' gradient as one
large matrix product over all steps, as cuDNN does.

With ``batch_sizes`` (a packed batch, as ``nn.utils.rnn.PackedSequence``'s: the rows sorted by decreasing length,
``batch_sizes[t]`` of them alive at step t), step t only computes the first ``batch_sizes[t]`` rows: a row stops at
its own length, and the work is proportional to the real tokens rather than to the padded length.

The equations, for input gates ``gi = x W_ih^T + b_ih`` and ``gh = h W_hh^T + b_hh``, split into (r, z, n)::

    r = sigmoid(gi_r + gh_r),  z = sigmoid(gi_z + gh_z),  n = tanh(gi_n + r * gh_n),  h' = (1 - z) * n + z * h

The biases of r and z only ever appear summed, so the caller folds ``b_hr`` and ``b_hz`` into the input gates'
bias (`input_bias`: one vector, not a pass over every step); the layer takes ``b_hn``, which r multiplies.

Under CPU bf16 autocast (``zoo train --precision bf16``) the matrix products take bf16 operands, as autocast's own
``nn.GRU`` cell products would, and everything else (the gates, the states, what backward saves) stays float32: the
state is carried in float32 from step to step, only its copy for the product is rounded. `matmul_dtype` says which
dtype the products use; `mm` and `addmm` are the products with that choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from zoo_core.fast_math import tanh_


_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # grad * y * (1 - y), one kernel, into grad_input
_tanh_backward = torch.ops.aten.tanh_backward.grad_input        # grad * (1 - y^2), one kernel, into grad_input


def matmul_dtype(like: Tensor) -> torch.dtype:
    """The dtype the hand-written training paths give their matrix products' operands: autocast's (bf16) where
    autocast is on for `like`'s device, else `like`'s own."""
    device = like.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else like.dtype


def mm(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """``a @ b`` with operands in `dtype` and the result in a's dtype; pass `b` already in `dtype` when it is reused
    (a weight). On a CPU with AVX512-BF16 (AMD Zen 4), bf16 products of the book's sizes run at about twice float32's
    rate: a (128, 256) x (256, 768) product in 259 instead of 525 us, one thread."""
    if a.dtype == dtype:
        return a @ b
    return (a.to(dtype) @ b).to(a.dtype)


def addmm(bias: Tensor, a: Tensor, b: Tensor, dtype: torch.dtype, out: Tensor | None = None) -> Tensor:
    """``bias + a @ b`` as `mm` computes the product, in bias's dtype (``torch.addmm`` in one kernel when bias, `a`
    and `dtype` agree), into `out` if given."""
    if a.dtype == dtype == bias.dtype:
        return torch.addmm(bias, a, b, out=out) if out is not None else torch.addmm(bias, a, b)
    product = a.to(dtype) @ b
    return torch.add(bias, product, out=out) if out is not None else torch.add(bias, product)


class _GRULayer(torch.autograd.Function):
    """One GRU layer over a whole (packed) sequence; see `gru_layer`."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)  # float32 in; no autocast inside
    def forward(ctx, gi: Tensor, h0: Tensor, W_hh: Tensor, b_hn: Tensor,  # type: ignore[override]
                batch_sizes: Sequence[int], h0_is_zero: bool, mm_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        H, N = h0.shape[1], gi.shape[0]
        outputs = gi.new_empty(N, H)           # h' of every (step, row), packed like gi
        ghn_all = gi.new_empty(N, H)           # W_hn h + b_hn, which the reset gate multiplies
        rz_all = gi.new_empty(N, 2 * H)        # the reset and update gates
        n_all = gi.new_empty(N, H)             # the candidate state
        gh = gi.new_empty(batch_sizes[0], 3 * H, dtype=mm_dtype)  # h W_hh^T of one step (reused: stays in cache)
        h_last = h0.clone()                    # each row's state after its last step
        W_hh_t = W_hh.to(mm_dtype).t()
        # every step's views, made in one call each (not a dozen slices per step)
        steps = zip(gi[:, :2 * H].split(batch_sizes), gi[:, 2 * H:].split(batch_sizes), ghn_all.split(batch_sizes),
                    rz_all.split(batch_sizes), n_all.split(batch_sizes), outputs.split(batch_sizes))
        h = h0
        for t, (g_rz, g_n, gh_n, rz, n, h_new) in enumerate(steps):
            n_t = len(g_rz)
            h = h[:n_t]
            if t == 0 and h0_is_zero:                                                  # h W_hh^T = 0
                gh[:n_t].zero_()
            else:
                torch.mm(h.to(mm_dtype), W_hh_t, out=gh[:n_t])                         # (n_t, 3H)
            torch.add(gh[:n_t, 2 * H:], b_hn, out=gh_n)                                # W_hn h + b_hn
            torch.add(g_rz, gh[:n_t, :2 * H], out=rz).sigmoid_()                       # r, z
            tanh_(torch.addcmul(g_n, rz[:, :H], gh_n, out=n))                          # n
            h = torch.lerp(n, h, rz[:, H:], out=h_new)                                 # n + z (h - n)
            n_next = batch_sizes[t + 1] if t + 1 < len(batch_sizes) else 0
            if n_next < n_t:                                                           # rows that end here
                h_last[n_next:n_t] = h[n_next:]
        ctx.save_for_backward(h0, W_hh, outputs, ghn_all, rz_all, n_all)
        ctx.batch_sizes, ctx.h0_is_zero, ctx.mm_dtype = list(batch_sizes), h0_is_zero, mm_dtype
        ctx.set_materialize_grads(False)  # an output nobody reads (a top encoder layer's) has no gradient: None
        return outputs, h_last

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, d_outputs: Tensor, d_h_last: Tensor):  # type: ignore[override]
        h0, W_hh, outputs, ghn_all, rz_all, n_all = ctx.saved_tensors
        batch_sizes, lp = ctx.batch_sizes, ctx.mm_dtype
        W_hh_lp = W_hh.to(lp)
        H, N = h0.shape[1], outputs.shape[0]
        # dL/d(h W_hh^T + b_hh) of every (step, row); the input gates' gradient is the same for r and z, and is
        # written over its n part once the recurrent weights' gradient is taken (gh_n enters through r * gh_n)
        d_gh = outputs.new_empty(N, 3 * H)
        d_gin = outputs.new_empty(N, H)
        pending = d_h_last if d_h_last is not None else h0.new_zeros(h0.shape)  # rows that end after this step
        h_prevs = [h0[:batch_sizes[0]]] + [out[:n] for out, n in zip(outputs.split(batch_sizes)[:-1],
                                                                         batch_sizes[1:])]
        d_outs = d_outputs.split(batch_sizes) if d_outputs is not None else [None] * len(batch_sizes)
        steps = list(zip(d_outs, h_prevs, ghn_all.split(batch_sizes),
                         rz_all.split(batch_sizes), rz_all[:, :H].split(batch_sizes), rz_all[:, H:].split(batch_sizes),
                         n_all.split(batch_sizes), d_gh.split(batch_sizes), d_gh[:, :H].split(batch_sizes),
                         d_gh[:, H:2 * H].split(batch_sizes), d_gh[:, :2 * H].split(batch_sizes),
                         d_gh[:, 2 * H:].split(batch_sizes), d_gin.split(batch_sizes)))
        dh = pending[:0]                                                               # dL/dh of the alive rows
        for t in reversed(range(len(steps))):
            d_out, h_prev, gh_n, rz, r, z, n, dgh, dgh_r, dgh_z, dgh_rz, dgh_n, dgin = steps[t]
            n_t = len(n)
            if len(dh) < n_t:                                                          # rows whose last step is this
                dh = torch.cat((dh, pending[len(dh):n_t]))
            dh_t = dh + d_out if d_out is not None else dh                             # dL/dh' at this step
            torch.mul(dh_t, h_prev - n, out=dgh_z)                                     # z: dh' (h - n)
            dhz = dh_t * z
            _tanh_backward(dh_t.sub_(dhz), n, grad_input=dgin)                         # n: dh' (1 - z) (1 - n^2)
            torch.mul(dgin, r, out=dgh_n)                                              # gh_n: dn * r
            torch.mul(dgin, gh_n, out=dgh_r)                                           # r: dn * gh_n
            _sigmoid_backward(dgh_rz, rz, grad_input=dgh_rz)                           # through the sigmoids
            if t > 0 or ctx.needs_input_grad[1]:
                dh = addmm(dhz, dgh, W_hh_lp, lp, out=dhz)                             # h: dh' z + dgh W_hh
        if len(dh) < len(pending):  # rows with no step at all (length 0): their gradient goes straight to h0
            dh = torch.cat((dh, pending[len(dh):]))
        # the recurrent weights' gradient over all steps at once: sum_t dgh_t^T h_{t-1}
        if all(n == batch_sizes[0] for n in batch_sizes):  # equal lengths: h_{t-1} is a view of the outputs
            B = batch_sizes[0]
            d_W_hh = mm(d_gh[B:].t(), outputs[:N - B].to(lp), lp)
            if not ctx.h0_is_zero:
                d_W_hh = addmm(d_W_hh, d_gh[:B].t(), h0.to(lp), lp, out=d_W_hh)
        else:
            d_W_hh = mm(d_gh.t(), torch.cat(h_prevs).to(lp), lp)
        d_b_hn = d_gh[:, 2 * H:].sum(0)
        d_gh[:, 2 * H:] = d_gin                                                        # now the input gates'
        return d_gh, (dh if ctx.needs_input_grad[1] else None), d_W_hh, d_b_hn, None, None, None


def input_bias(b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """The input gates' bias when the recurrent biases of r and z are folded in: ``b_ih + (b_hr, b_hz, 0)``."""
    H = len(b_hh) // 3
    return b_ih + torch.cat((b_hh[:2 * H], b_hh.new_zeros(H)))


def gru_layer(gi: Tensor, h0: Tensor | None, W_hh: Tensor, b_hh: Tensor,
              batch_sizes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Run one GRU layer over a (packed) sequence.

    Args:
        gi: the input gates of every step with the r and z recurrent biases folded in, ``x W_ih^T +
            input_bias(b_ih, b_hh)``, packed: (sum(batch_sizes), 3H), step t's rows at ``sum(batch_sizes[:t])``
            onwards (for equal lengths, simply the (num_steps * batch, 3H) reshape of a time-major tensor).
        h0: the initial state (batch, H), batch = batch_sizes[0]; None for zeros (the first step's product is
            then skipped).
        W_hh, b_hh: the recurrent weights (3H, H) and bias (3H,), ``nn.GRU``'s ``weight_hh_l*``/``bias_hh_l*``
            (only b_hh's n part is read here).
        batch_sizes: how many rows are alive at each step (non-increasing; the rows sorted by decreasing length).

    Returns:
        outputs (sum(batch_sizes), H), packed like `gi`; and each row's state after its last step (batch, H); float32
        under autocast (the products' operands bf16, see the module docstring).
    """
    zero = h0 is None
    if zero:
        h0 = W_hh.new_zeros(batch_sizes[0], W_hh.shape[1])
    return _GRULayer.apply(gi, h0, W_hh, b_hh[2 * W_hh.shape[1]:], list(batch_sizes), zero, matmul_dtype(W_hh))
