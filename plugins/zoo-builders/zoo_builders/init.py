"""The book's initialisers (d2l §6.3), as factories of functions for ``module.apply``.

``net.apply(init_normal(0.01))`` initialises every linear and convolution layer of `net`; ``net[0].apply(...)``
only that sub-block's. Each sets the weights as named and the biases to zero. A lazy layer must be materialised
first (one forward pass, or `zoo_core.Model.materialize`): its weights do not exist yet, and the book's
``net.apply(init)`` in ``__init__`` silently does nothing to it; here it is an error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from zoo_core import ZooError

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
"""The layer types the initialisers touch (materialised lazy layers are of these types)."""

Init = Callable[[nn.Module], None]


def _initializer(init_weight: Callable[[torch.Tensor], object]) -> Init:
    @torch.no_grad()
    def apply(module: nn.Module) -> None:
        if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
            raise ZooError(f"{type(module).__name__} is lazy and has no weights yet: run one forward pass (or "
                           f"Model.materialize()) before initialising it")
        if isinstance(module, LAYERS):
            init_weight(module.weight)
            if module.bias is not None:
                module.bias.zero_()

    return apply


def init_normal(std: float = 0.01, mean: float = 0.0) -> Init:
    """Weights ~ N(mean, std^2), biases 0 (the book's ``init_normal``)."""
    return _initializer(lambda w: nn.init.normal_(w, mean, std))


def init_constant(value: float) -> Init:
    """Weights = `value` everywhere, biases 0 (the book's ``init_constant`` with 1, and ``init_42``)."""
    return _initializer(lambda w: nn.init.constant_(w, value))


def init_xavier() -> Init:
    """Xavier (Glorot) uniform weights, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)); biases 0."""
    return _initializer(nn.init.xavier_uniform_)


def init_kaiming() -> Init:
    """Kaiming (He) normal weights for ReLU networks, N(0, 2 / fan_in); biases 0."""
    return _initializer(lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))


def init_mixture() -> Init:
    """The book's ``my_init``: each weight element independently U(5, 10) with probability 1/4, exactly 0 with
    probability 1/2, U(-10, -5) with probability 1/4; biases 0.

    Drawn as the book does: u ~ U(-10, 10), kept where |u| >= 5, else 0.
    """

    def mixture(w: torch.Tensor) -> None:
        nn.init.uniform_(w, -10, 10)
        w.masked_fill_(w.abs() < 5, 0.0)  # +0.0 (multiplying by the mask would leave -0.0s)

    return _initializer(mixture)


__all__ = ["LAYERS", "init_constant", "init_kaiming", "init_mixture", "init_normal", "init_xavier"]
