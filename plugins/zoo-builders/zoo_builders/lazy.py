"""Lazy layers (d2l §6.4) with clear errors: an input of the wrong size fails naming the layer and both shapes.

A lazy layer takes its input size from the first batch it sees (`zoo_core.Model.materialize` shows it the example
batch). Later, an input of another size fails deep inside a matmul (``mat1 and mat2 shapes cannot be multiplied
(2x10 and 20x256)``), naming neither the layer nor what it expected. Here it fails with::

    layer net.0 (LazyLinear -> Linear) expects inputs of size 20 in the last dimension, got shape (2, 10)

How, at no cost: nothing is checked while the forward succeeds. When it raises a ``RuntimeError``,
`find_input_size_error` runs it once more (eval mode, no gradients) with a size check before each linear and
convolution layer, and the first layer whose input does not fit turns into an `InputSizeError` (chained to the
original error; other errors are re-raised untouched). Models get this from the `InputChecked` mixin; per-layer
forward hooks would do the same on every call, and hooks take ``nn.Module``'s slow call path (a few
microseconds per layer call: measurable on small models). The ONNX export traces ``forward``, which is unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo_core import ZooError

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)  # lazy convolutions are subclasses
_WAS_LAZY = "_zoo_was_lazy"  # attribute set on a lazy layer: its class name before it got its shapes


class InputSizeError(ZooError, ValueError):
    """An input whose size does not fit the layer it reaches."""


def is_lazy(module: nn.Module) -> bool:
    """Whether `module` (or one of its sub-modules) still waits for its first batch to get its shapes."""
    return any(isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params()
               for m in module.modules())


def mark_lazy(module: nn.Module) -> nn.Module:
    """Remember which layers of `module` are lazy, so that errors can say ``LazyLinear -> Linear`` once they have
    become plain layers. Call it before the first forward (`InputChecked` does, in `materialize`)."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.lazy.LazyModuleMixin):
            setattr(layer, _WAS_LAZY, type(layer).__name__)
    return module


def _kind(layer: nn.Module) -> str:
    was = getattr(layer, _WAS_LAZY, None)
    return f"{was} -> {type(layer).__name__}" if was and was != type(layer).__name__ else type(layer).__name__


def _check(name: str, layer: nn.Module, X: torch.Tensor) -> None:
    """Raise `InputSizeError` if `X` does not fit `layer` (a materialised linear or convolution layer)."""
    if isinstance(layer, nn.Linear) and X.shape[-1] != layer.in_features:
        raise InputSizeError(f"layer {name} ({_kind(layer)}) expects inputs of size {layer.in_features} in the last "
                             f"dimension, got shape {tuple(X.shape)}")
    if isinstance(layer, _CONVS):
        dims = len(layer.kernel_size)  # input (batch, C, *spatial) or unbatched (C, *spatial)
        channel_dim = X.dim() - dims - 1
        if channel_dim >= 0 and X.shape[channel_dim] != layer.in_channels:
            raise InputSizeError(f"layer {name} ({_kind(layer)}) expects inputs with {layer.in_channels} channels in "
                                 f"dimension {channel_dim}, got shape {tuple(X.shape)}")


def find_input_size_error(module: nn.Module, *args: Any, **kwargs: Any) -> InputSizeError | None:
    """Run `module` on the inputs with a size check before each linear and convolution layer: the error of the
    first layer whose input does not fit, or None if none (the failure was something else)."""
    found: list[InputSizeError] = []

    def hook_for(name: str) -> Any:
        def hook(layer: nn.Module, layer_args: tuple) -> None:
            if layer_args and isinstance(layer_args[0], torch.Tensor) and not is_lazy(layer):
                try:
                    _check(name, layer, layer_args[0])
                except InputSizeError as e:
                    found.append(e)
                    raise
        return hook

    handles = [layer.register_forward_pre_hook(hook_for(name or type(module).__name__))
               for name, layer in module.named_modules() if isinstance(layer, (nn.Linear, *_CONVS))]
    was_training = module.training
    try:
        module.eval()  # no batch-norm statistics updated by the re-run
        with torch.no_grad():
            nn.Module.__call__(module, *args, **kwargs)  # the plain call: no diagnosis of the diagnosis
    except Exception:  # noqa: BLE001 - whatever it raises, `found` says whether a layer's size was the cause
        pass
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return found[0] if found else None


class InputChecked(nn.Module):
    """Mixin for models built from lazy layers: an input of the wrong size raises `InputSizeError` naming the layer
    and both shapes, instead of a bare matmul error. Free while nothing fails (see the module's docstring).

    ``class MyModel(InputChecked, zoo_core.Model)``; `materialize` marks the lazy layers first.
    """

    def materialize(self, *args: Any, **kwargs: Any) -> Any:
        mark_lazy(self)
        return super().materialize(*args, **kwargs)  # type: ignore[misc]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except RuntimeError as e:
            error = find_input_size_error(self, *args, **kwargs)
            if error is None:
                raise
            raise error from e


__all__ = ["InputChecked", "InputSizeError", "find_input_size_error", "is_lazy", "mark_lazy"]
