"""Blocks and combinators of blocks (d2l §6.1, and §6.2's shared parameters).

- `MySequential`: the book's own ``nn.Sequential``, registering its modules in order.
- `FixedHiddenMLP`, `NestMLP`, `chimera`: the book's free-form blocks, with the constant weight kept as a buffer and
  the ``while`` loop rewritten in closed form (`HalveUntilSmall`) so that the block exports to ONNX.
- `Parallel`: run blocks side by side and concatenate (chapter 8's Inception block is one).
- `repeat` / `Repeat`: a block factory, n copies combined sequentially, in parallel (sum or concat) or residually,
  with fresh or tied parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core import ZooError


class UnknownModeError(ZooError, ValueError):
    """A `repeat` mode that does not exist; the message names the valid ones."""


class MySequential(nn.Module):
    """``nn.Sequential`` from scratch: the modules are registered under ``"0"``, ``"1"`` ... and run in that order.

    Registering (rather than keeping a Python list) is what makes their parameters visible to ``parameters()``,
    ``state_dict()`` and ``.to()``. The same module may appear twice (tied parameters): it then runs twice.
    """

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        for idx, module in enumerate(modules):
            self.add_module(str(idx), module)

    def forward(self, X: Tensor) -> Tensor:
        # self._modules, not self.children(): children() yields a module used twice only once
        for module in self._modules.values():
            X = module(X)
        return X


class HalveUntilSmall(nn.Module):
    """The book's ``while X.abs().sum() > 1: X /= 2``, in closed form, so that it exports to ONNX.

    The loop halves X exactly n times, where n is the number of k >= 0 with ``s > 2**k`` (s = ``X.abs().sum()`` at
    the start: halving X halves s exactly). Counting against exact powers of two and scaling by an exact ``2**-n``
    (a table lookup, not ``pow``) gives bit-for-bit the loop's result for every finite float32 X outside the
    subnormal range. With ``per_example=True`` each row (last dimension) is halved on its own, as if the loop ran
    per example; the book's version (False) halves the whole tensor, so one example's size affects the others.
    """

    def __init__(self, per_example: bool = False) -> None:
        super().__init__()
        self.per_example = per_example
        k = 128  # every finite float32 s is below 2**128
        # non-persistent: constants of the algorithm, not state; computed from Python floats, so exact
        self.register_buffer("powers", torch.tensor([2.0**i for i in range(k)]), persistent=False)  # 2^0..2^127
        self.register_buffer("halves", torch.tensor([2.0**-i for i in range(k + 1)]), persistent=False)  # 2^0..2^-128

    def halvings(self, X: Tensor) -> Tensor:
        """How many times the loop halves X: an int64 tensor, one per row (per_example) or a scalar."""
        s = X.abs().sum(-1) if self.per_example else X.abs().sum()
        return (s.unsqueeze(-1) > self.powers).sum(-1)

    def forward(self, X: Tensor) -> Tensor:
        scale = self.halves[self.halvings(X)]  # (batch,) or ()
        return X * (scale.unsqueeze(-1) if self.per_example else scale)


def halve_until_small_loop(X: Tensor, per_example: bool = False) -> Tensor:
    """The book's literal loop (the reference `HalveUntilSmall` is tested against; not exportable)."""
    X = X.clone(memory_format=torch.contiguous_format)
    if not per_example:
        while X.abs().sum() > 1:
            X /= 2
        return X
    for row in X.view(-1, X.shape[-1]):  # a view: halving a row halves it in X
        while row.abs().sum() > 1:
            row /= 2
    return X


class FixedHiddenMLP(nn.Module):
    """d2l §6.1's free-form block: a constant random weight, one linear layer used twice, and control flow.

    ``X -> linear -> relu(X @ rand_weight + 1) -> linear (the same layer: shared parameters) -> halve until
    |X|_1 <= 1 -> sum``. The input must have ``num_hiddens`` features (the linear layer takes its own output).
    ``rand_weight`` is a buffer: no gradient, never updated by the optimiser, but saved, exported and moved by
    ``.to()`` (the book's plain tensor attribute is none of these). The book returns ``X.sum()``, one number for the
    whole batch; ``per_example=True`` halves and sums each example on its own, giving shape ``(batch,)``.
    """

    def __init__(self, num_hiddens: int = 20, per_example: bool = False) -> None:
        super().__init__()
        self.register_buffer("rand_weight", torch.rand(num_hiddens, num_hiddens))
        self.linear = nn.LazyLinear(num_hiddens)
        self.shrink = HalveUntilSmall(per_example)
        self.per_example = per_example

    def forward(self, X: Tensor) -> Tensor:
        X = self.linear(X)
        X = F.relu(X @ self.rand_weight + 1)
        X = self.linear(X)  # reuse: its gradient is the sum of both uses'
        X = self.shrink(X)  # the book's `while X.abs().sum() > 1: X /= 2`
        return X.sum(-1) if self.per_example else X.sum()


class NestMLP(nn.Module):
    """d2l §6.1: a block holding a block: ``Sequential(Linear 64, ReLU, Linear 32, ReLU)`` then ``Linear 16``."""

    def __init__(self, hiddens: tuple[int, int] = (64, 32), num_outputs: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LazyLinear(hiddens[0]), nn.ReLU(), nn.LazyLinear(hiddens[1]), nn.ReLU())
        self.linear = nn.LazyLinear(num_outputs)

    def forward(self, X: Tensor) -> Tensor:
        return self.linear(self.net(X))


def chimera(per_example: bool = False) -> nn.Sequential:
    """d2l §6.1's chimera: ``Sequential(NestMLP(), LazyLinear(20), FixedHiddenMLP())``; on ``(batch, d)`` inputs it
    returns a scalar (the book's), or ``(batch,)`` with ``per_example=True``."""
    return nn.Sequential(NestMLP(), nn.LazyLinear(20), FixedHiddenMLP(20, per_example=per_example))


class Parallel(nn.Module):
    """Runs every block on the same input and concatenates their outputs along `dim` (channels: 1).

    ``Parallel(mlp12, mlp24)(torch.rand(2, 10)).shape == (2, 36)``; chapter 8's Inception block is four branches in a
    `Parallel`.
    """

    def __init__(self, *blocks: nn.Module, dim: int = 1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.dim = dim

    def forward(self, X: Tensor) -> Tensor:
        return torch.cat([block(X) for block in self.blocks], dim=self.dim)


MODES = ("sequential", "parallel-sum", "parallel-concat", "residual")


class Repeat(nn.Module):
    """n blocks combined by `mode` (see `repeat`); the same block object may appear several times (tied)."""

    def __init__(self, blocks: list[nn.Module], mode: str = "sequential", dim: int = 1) -> None:
        super().__init__()
        if mode not in MODES:
            raise UnknownModeError(f"unknown repeat mode {mode!r}; valid modes: {', '.join(MODES)}")
        self.blocks = nn.ModuleList(blocks)  # a ModuleList keeps repeats: parameters() counts a tied block once
        self.mode = mode
        self.dim = dim

    def forward(self, X: Tensor) -> Tensor:
        if self.mode == "sequential":
            for block in self.blocks:
                X = block(X)
            return X
        if self.mode == "residual":
            for block in self.blocks:
                X = X + block(X)
            return X
        outs = [block(X) for block in self.blocks]
        return torch.cat(outs, dim=self.dim) if self.mode == "parallel-concat" else torch.stack(outs).sum(0)


def repeat(make_block: Callable[[], nn.Module], n: int, mode: str = "sequential", tied: bool = False,
           dim: int = 1) -> Repeat:
    """n blocks from the factory `make_block`, combined by `mode`.

    Modes: ``sequential`` (b_n(...b_1(X))), ``parallel-sum`` (sum_i b_i(X)), ``parallel-concat`` (b_i(X)
    concatenated on `dim`) and ``residual`` (X <- X + b_i(X), i = 1..n). Each block has fresh parameters (the
    factory is called n times) unless ``tied=True``: then one block is used n times, one parameter set whose
    gradient is the sum of all uses'. Any other mode is an `UnknownModeError` (a `ZooError` and a `ValueError`)
    naming the valid ones.
    """
    if mode not in MODES:  # before building anything
        raise UnknownModeError(f"unknown repeat mode {mode!r}; valid modes: {', '.join(MODES)}")
    if n < 1:
        raise ZooError(f"repeat needs n >= 1 blocks, got {n}")
    if tied:
        block = make_block()
        blocks = [block] * n
    else:
        blocks = [make_block() for _ in range(n)]
    return Repeat(blocks, mode, dim)


__all__ = ["MODES", "FixedHiddenMLP", "HalveUntilSmall", "MySequential", "NestMLP", "Parallel", "Repeat",
           "UnknownModeError", "chimera", "halve_until_small_loop", "repeat"]
