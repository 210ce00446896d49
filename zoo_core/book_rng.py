"""Replaying the book's random stream: ``zoo train MODEL --rng book --seed S`` draws every random number the d2l
reference draws at seed S, in the same order, so that a zoo run compares with the book's run seed for seed.

A zoo run's own stream (``--rng zoo``, the default) is built for resuming and DDP: the trainer seeds torch again
after building the model, and each epoch's shuffle comes from a generator of its own (`zoo_core.data.seeded_generator`).
The book's code (d2l 1.0.3, `../shared/tools/d2l-reference`) draws everything from torch's one global generator,
seeded once by ``torch.manual_seed``:

1. the parameters, in the order its constructors run (``nn.Embedding``, ``nn.GRU``, then ``init_seq2seq``, ...);
2. at the start of each epoch, two 64-bit numbers from ``iter(DataLoader(..., shuffle=True))``: the iterator's
   ``_base_seed`` (drawn even without workers), then the ``RandomSampler``'s seed, which seeds a generator of its own
   for ``torch.randperm`` (`dataloader_permutation`);
3. in each training step, whatever the forward pass draws: ``nn.GRU``'s dropout masks between layers on the CPU
   (``at::dropout``: ``empty_like(input).bernoulli_(1 - p)``, `dropout_mask`), and, at the very first forward pass,
   the initialisation of the ``nn.LazyLinear`` output layers (``reset_parameters`` once materialised, `defer_init`).

A model that can replay this sets ``Model.replays_book_rng`` and implements ``Model.init_like_book``, which the
trainer calls right after seeding; the trainer then shuffles with `dataloader_permutation`. Nothing else draws from the
global stream during training (validation runs in eval mode: no dropout). The figures still part slowly, through
float rounding: the zoo's training paths add in another order than ``nn.GRU``. seq2seq's book recipe at seed 0 ends
with a validation loss of 3.917 against the reference's 3.928, and translates the book's four sentences as it does.

Not replayed: a resumed run (the stream's position is not in the checkpoint), DDP, ``torch.compile``; the trainer
refuses them with ``--rng book``. Checked on the CPU (the tests, and the reference's own runs at seeds 0-2). On CUDA the
zoo draws the same way (its training there is ``nn.GRU``'s forward pass, cuDNN's dropout as in the book's code), but
no test has compared the two there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def dataloader_permutation(n: int) -> Tensor:
    """The order in which ``iter(torch.utils.data.DataLoader(dataset, batch_size, shuffle=True))`` (no workers, no
    generator given, as the book's ``get_tensorloader``) visits `n` examples, drawing from the global generator
    exactly what that iterator draws: its base seed, then the sampler's seed. Returns int64 (n,)."""
    torch.empty((), dtype=torch.int64).random_()  # _BaseDataLoaderIter._base_seed, unused without workers
    seed = int(torch.empty((), dtype=torch.int64).random_().item())  # RandomSampler.__iter__
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def dropout_mask(shape: tuple[int, ...], p: float, device: torch.device | str | None = None) -> Tensor:
    """The scaled mask with which ``at::dropout`` (what ``nn.GRU`` applies between its layers on the CPU) multiplies
    an input of `shape`: ``empty(shape).bernoulli_(1 - p) / (1 - p)``, drawn from the global generator."""
    return torch.empty(shape, device=device).bernoulli_(1 - p).div_(1 - p)


def defer_init(module: nn.Module) -> None:
    """Run ``module.reset_parameters()`` at the start of its first forward pass instead of now: what ``nn.Lazy*``
    layers do when they materialise, and so where the book's ``nn.LazyLinear`` output layers draw their weights in
    its random stream (after the first epoch's shuffle and the first step's dropout masks)."""

    def materialize(mod: nn.Module, args: object) -> None:
        handle.remove()
        mod.reset_parameters()  # type: ignore[operator]

    handle = module.register_forward_pre_hook(materialize)


__all__ = ["dataloader_permutation", "defer_init", "dropout_mask"]
