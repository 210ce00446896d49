"""Elementwise functions for the hand-written CPU training loops (chapter 9's tanh RNN, the GRUs of chapters 10-11,
additive attention), where ATen's own kernel is the slow part of a step on some CPUs.

Why: PyTorch's CPU ``tanh`` (like ``exp``, ``log``, ``sqrt``) goes to MKL's vector math library when PyTorch is built
with MKL, and MKL is known to take generic code paths on non-Intel processors. On the AMD EPYC (AVX2) machine this
zoo was measured on, ``torch.tanh`` of one (1024, 32) GRU gate took 114-140 us (3.5-4.3 ns an element) where
``torch.sigmoid``, which PyTorch vectorises itself, took 34 us: 7% of `deep-rnn-lm`'s training step went to
``tanh``. ``tanh x = 2 sigmoid(2 x) - 1`` costs a sigmoid and three light kernels (about 60 us there). On an Intel
CPU, where MKL's ``tanh`` should be fast, this may cost a few microseconds more a call (not measured: no Intel machine
was at hand when it was written); it is used where the kernel's gain was measured (`benchmarks/fast_tanh.py`).
"""

from __future__ import annotations

from torch import Tensor


def tanh_(x: Tensor) -> Tensor:
    """``x.tanh_()`` as ``2 sigmoid(2 x) - 1``, in place; returns `x`.

    Within 2.5e-7 of float64's tanh in float32 (``torch.tanh``: 3e-8), exactly -1 and 1 where ``tanh`` saturates,
    NaN for NaN. Near saturation ``1 - y^2`` is then a little less exact than from ``torch.tanh``: the gradients of
    chapter 9's RNN are 1e-6-1e-5 off the exact ones, up to 5 times the book's own float32 computation (tested there).
    ``tanh(|x|) = 1 - 2 sigmoid(-2|x|)`` with the sign copied back would match ``torch.tanh`` there, but cost half of
    the time saved (two more kernels). Its gradient is ``tanh``'s, ``1 - y^2``; callers with a hand-written backward use
    ``aten.tanh_backward`` on the result as for ``tanh_``. For tensors outside autograd (a custom
    ``autograd.Function``'s forward): under autograd, the in-place sigmoid's saved output is overwritten."""
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


__all__ = ["tanh_"]
