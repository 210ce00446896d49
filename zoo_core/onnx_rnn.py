"""ONNX export of `nn.RNN`, `nn.GRU` and `nn.LSTM` with a dynamic time axis.

Why this exists: torch.export has no symbolic loop for ``aten.rnn_tanh``/``aten.gru``/``aten.lstm``; their
decomposition steps through time in Python, which specialises the sequence length to the traced one
(pytorch/pytorch#115092, #126339). torch 2.14's ONNX exporter swaps in a ``while_loop`` decomposition of GRU and
LSTM while capturing, but its later ``run_decompositions`` recomputes the shapes with the Python loop again (what
pytorch/pytorch#193192 fixes), so the ONNX file still declares the traced length, which ONNX Runtime then holds to
(`zoo_core.onnx_export._check_dynamic` catches that and fails the export).

The fix, for every model of the zoo at once, without touching model code (which keeps calling cuDNN/ATen's fused
kernels in training):

* three custom ops, ``zoo::rnn``, ``zoo::gru`` and ``zoo::lstm``, each one whole (multi-layer, bidirectional)
  recurrent layer stack. Their eager kernel is ATen's own (``torch._VF``), their fake kernel gives the output shapes
  from the input's symbolic ones without looping over time, and torch.export keeps them as single nodes;
* `route_recurrent_modules`, a context manager that, in the thread that entered it, sends the ``torch._VF`` calls
  made by `nn.RNN.forward`/`nn.GRU.forward`/`nn.LSTM.forward` to those ops; all of the modules' own argument handling
  (a missing initial state, unbatched input, shape checks) still runs;
* `onnx_translations`, the ``custom_translation_table`` of `torch.onnx.export` that writes each op as one ONNX
  ``RNN``/``GRU``/``LSTM`` node per layer, with both directions in the node, PyTorch's gate order rearranged to
  ONNX's (GRU r,z,n -> z,r,h with ``linear_before_reset=1``, which is PyTorch's formulation; LSTM i,f,g,o -> i,o,f,c),
  so the sequence length stays symbolic in the ONNX graph.

`zoo_core.onnx_export.export_graph` uses both. Not supported, with a one-line `ZooError`: `nn.LSTM(proj_size>0)`
(ONNX's LSTM has no projection), dropout between layers in training mode (export runs in eval mode, where there is
none) and `PackedSequence` input (which torch.export cannot trace anyway: without an initial state, torch's own
``nn.GRU.forward`` fails first, with the exporter's error).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

import torch
from torch import Tensor

from zoo_core.errors import ZooError

__all__ = ["onnx_translations", "route_recurrent_modules"]

# ATen's recurrent kernels, as `nn.RNN`/`nn.GRU`/`nn.LSTM` reach them (``torch._VF.<name>``), never patched.
_ATEN: dict[str, Callable[..., Any]] = {name: getattr(torch._C._VariableFunctions, name)
                                        for name in ("rnn_tanh", "rnn_relu", "gru", "lstm")}


def _directions(bidirectional: bool) -> int:
    return 2 if bidirectional else 1


def _fake_output(input: Tensor, hidden_size: int, bidirectional: bool, batch_first: bool) -> Tensor:
    """The output's shape from the input's (symbolic) one: no loop over time, so nothing specialises it."""
    steps, batch = (input.shape[1], input.shape[0]) if batch_first else (input.shape[0], input.shape[1])
    size = _directions(bidirectional) * hidden_size
    return input.new_empty((batch, steps, size) if batch_first else (steps, batch, size))


@torch.library.custom_op("zoo::rnn", mutates_args=())
def _rnn_op(input: Tensor, hx: Tensor, params: list[Tensor], nonlinearity: str, has_biases: bool,
            num_layers: int, bidirectional: bool, batch_first: bool) -> tuple[Tensor, Tensor]:
    """`nn.RNN`'s whole layer stack, inference only (no dropout)."""
    output, h_n = _ATEN[f"rnn_{nonlinearity}"](input, hx, params, has_biases, num_layers, 0.0, False, bidirectional,
                                               batch_first)
    return output, h_n


@torch.library.custom_op("zoo::gru", mutates_args=())
def _gru_op(input: Tensor, hx: Tensor, params: list[Tensor], has_biases: bool, num_layers: int,
            bidirectional: bool, batch_first: bool) -> tuple[Tensor, Tensor]:
    """`nn.GRU`'s whole layer stack, inference only (no dropout)."""
    output, h_n = _ATEN["gru"](input, hx, params, has_biases, num_layers, 0.0, False, bidirectional, batch_first)
    return output, h_n


@torch.library.custom_op("zoo::lstm", mutates_args=())
def _lstm_op(input: Tensor, h0: Tensor, c0: Tensor, params: list[Tensor], has_biases: bool, num_layers: int,
             bidirectional: bool, batch_first: bool) -> tuple[Tensor, Tensor, Tensor]:
    """`nn.LSTM`'s whole layer stack (without projection), inference only (no dropout)."""
    output, h_n, c_n = _ATEN["lstm"](input, [h0, c0], params, has_biases, num_layers, 0.0, False, bidirectional,
                                     batch_first)
    return output, h_n, c_n


@_rnn_op.register_fake
def _(input: Tensor, hx: Tensor, params: list[Tensor], nonlinearity: str, has_biases: bool, num_layers: int,
      bidirectional: bool, batch_first: bool) -> tuple[Tensor, Tensor]:
    return _fake_output(input, hx.shape[2], bidirectional, batch_first), hx.new_empty(hx.shape)


@_gru_op.register_fake
def _(input: Tensor, hx: Tensor, params: list[Tensor], has_biases: bool, num_layers: int, bidirectional: bool,
      batch_first: bool) -> tuple[Tensor, Tensor]:
    return _fake_output(input, hx.shape[2], bidirectional, batch_first), hx.new_empty(hx.shape)


@_lstm_op.register_fake
def _(input: Tensor, h0: Tensor, c0: Tensor, params: list[Tensor], has_biases: bool, num_layers: int,
      bidirectional: bool, batch_first: bool) -> tuple[Tensor, Tensor, Tensor]:
    return (_fake_output(input, h0.shape[2], bidirectional, batch_first), h0.new_empty(h0.shape),
            c0.new_empty(c0.shape))


# --- routing the modules' ATen calls to the ops, during export only -------------------------------------------------

_routing = threading.local()  # .depth > 0 in a thread inside route_recurrent_modules
_patch_lock = threading.Lock()
_patch_users = 0


def _routing_here() -> bool:
    return getattr(_routing, "depth", 0) > 0


def _refuse(message: str) -> NoReturn:
    """Raise a `ZooError`, remembered so that `route_recurrent_modules` re-raises it over whatever the exporter
    wraps it in (torch.export reports a failed trace in a page-long error of its own)."""
    error = ZooError(message)
    _routing.refusal = error
    raise error


def _routed(name: str) -> Callable[..., Any]:
    """A stand-in for ``torch._VF.<name>`` that calls the zoo's op in a routing thread and ATen's kernel elsewhere."""
    aten = _ATEN[name]

    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs or not _routing_here():  # nn's modules pass everything by position
            return aten(*args, **kwargs)
        # input overload: (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first);
        # the PackedSequence ("data") one has batch_sizes second and no batch_first.
        if len(args) != 9 or not isinstance(args[3], bool):
            _refuse("cannot export a recurrent layer run on a PackedSequence: pass padded tensors instead")
        input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first = args
        if len(params) != num_layers * _directions(bidirectional) * (4 if has_biases else 2):
            _refuse("cannot export nn.LSTM(proj_size > 0): ONNX's LSTM has no projection")
        if train and dropout > 0 and num_layers > 1:
            _refuse("cannot export a recurrent layer with dropout in training mode: export the model in eval mode")
        params = list(params)
        if name == "lstm":
            h0, c0 = hx
            return _lstm_op(input, h0, c0, params, has_biases, num_layers, bidirectional, batch_first)
        if name == "gru":
            return _gru_op(input, hx, params, has_biases, num_layers, bidirectional, batch_first)
        return _rnn_op(input, hx, params, name.removeprefix("rnn_"), has_biases, num_layers, bidirectional,
                       batch_first)

    call.__name__ = call.__qualname__ = name
    return call


def _install(install: bool) -> None:
    vf = torch._VF  # the module object torch.nn.modules.rnn calls through (``_VF.gru(...)``)
    for name in _ATEN:
        if install:
            setattr(vf, name, _routed(name))
        else:
            vf.__dict__.pop(name, None)  # back to VFModule.__getattr__, i.e. torch._C._VariableFunctions


@contextlib.contextmanager
def route_recurrent_modules() -> Iterator[None]:
    """Inside this context, in this thread, `nn.RNN`/`nn.GRU`/`nn.LSTM` run through the ``zoo::`` ops, which
    torch.export keeps whole with a symbolic sequence length; other threads (a training loop) are unaffected.

    ``torch._VF``'s four recurrent functions are replaced while any thread is inside the context (reference
    counted, so overlapping exports from several threads are safe) and restored after the last one leaves.
    """
    global _patch_users
    with _patch_lock:
        if _patch_users == 0:
            _install(True)
        _patch_users += 1
    _routing.depth = getattr(_routing, "depth", 0) + 1
    _routing.refusal = None
    try:
        yield
    except Exception as e:
        refusal, _routing.refusal = _routing.refusal, None
        if refusal is None or refusal is e:
            raise
        raise refusal from e
    finally:
        _routing.depth -= 1
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                _install(False)


# --- ONNX translations -------------------------------------------------------------------------------------------


def _onnx_stack(kind: str, X: Any, h0: Any, c0: Any, params: Sequence[Any], has_biases: bool, num_layers: int,
                bidirectional: bool, batch_first: bool, activation: str = "Tanh") -> tuple[Any, ...]:
    """ONNX nodes for a PyTorch layer stack: one ONNX RNN/GRU/LSTM node per layer (both directions in it).

    ONNX's X is (seq, batch, input) and Y is (seq, directions, batch, hidden); PyTorch's output is
    (seq, batch, directions * hidden), which is also the next layer's input. Gates are reordered from PyTorch's
    packing to ONNX's; the two biases stay separate (ONNX's B is [Wb, Rb]), as PyTorch keeps them.
    """
    from onnxscript import opset18 as op

    directions = _directions(bidirectional)
    hidden = int(params[1].shape[1])  # weight_hh_l0: (gates * hidden, hidden)
    per_direction = 4 if has_biases else 2
    # ONNX's gate order, as indices into PyTorch's: GRU (r, z, n) -> (z, r, h); LSTM (i, f, g, o) -> (i, o, f, c)
    order = {"rnn": (0,), "gru": (1, 0, 2), "lstm": (0, 3, 1, 2)}[kind]

    def reorder(tensor: Any) -> Any:
        if len(order) == 1:
            return tensor
        gates = [op.Slice(tensor, [g * hidden], [(g + 1) * hidden], [0]) for g in order]
        return op.Concat(*gates, axis=0)

    def stack(values: list[Any]) -> Any:
        values = [op.Unsqueeze(v, [0]) for v in values]
        return values[0] if len(values) == 1 else op.Concat(*values, axis=0)

    if batch_first:
        X = op.Transpose(X, perm=[1, 0, 2])
    h_n, c_n = [], []
    direction = "bidirectional" if bidirectional else "forward"
    for layer in range(num_layers):
        W, R, B = [], [], []
        for d in range(directions):
            first = (layer * directions + d) * per_direction
            w_ih, w_hh, *biases = params[first : first + per_direction]
            W.append(reorder(w_ih))
            R.append(reorder(w_hh))
            if biases:
                B.append(op.Concat(reorder(biases[0]), reorder(biases[1]), axis=0))
        states = slice(layer * directions, (layer + 1) * directions)
        h = op.Slice(h0, [states.start], [states.stop], [0])
        inputs = (X, stack(W), stack(R), stack(B) if B else None, None, h)
        if kind == "lstm":
            c = op.Slice(c0, [states.start], [states.stop], [0])
            Y, Y_h, Y_c = op.LSTM(*inputs, c, hidden_size=hidden, direction=direction)
            c_n.append(Y_c)
        elif kind == "gru":
            Y, Y_h = op.GRU(*inputs, hidden_size=hidden, direction=direction, linear_before_reset=1)
        else:
            Y, Y_h = op.RNN(*inputs, hidden_size=hidden, direction=direction, activations=[activation] * directions)
        h_n.append(Y_h)
        # (seq, directions, batch, hidden) -> (seq, batch, directions * hidden), forward direction first
        X = op.Reshape(op.Transpose(Y, perm=[0, 2, 1, 3]), [0, 0, -1])
    if batch_first:
        X = op.Transpose(X, perm=[1, 0, 2])

    def concat(states: list[Any]) -> Any:
        return states[0] if len(states) == 1 else op.Concat(*states, axis=0)

    return (X, concat(h_n), concat(c_n)) if kind == "lstm" else (X, concat(h_n))


_T = TypeVar("_T")  # any tensor type: the ONNX ops themselves accept float16, float and double


def _onnx_rnn(input: _T, hx: _T, params: Sequence[_T], nonlinearity: str, has_biases: bool, num_layers: int,
              bidirectional: bool, batch_first: bool) -> tuple[_T, _T]:
    activation = {"tanh": "Tanh", "relu": "Relu"}[nonlinearity]
    return _onnx_stack("rnn", input, hx, None, params, has_biases, num_layers, bidirectional, batch_first,
                       activation)


def _onnx_gru(input: _T, hx: _T, params: Sequence[_T], has_biases: bool, num_layers: int, bidirectional: bool,
              batch_first: bool) -> tuple[_T, _T]:
    return _onnx_stack("gru", input, hx, None, params, has_biases, num_layers, bidirectional, batch_first)


def _onnx_lstm(input: _T, h0: _T, c0: _T, params: Sequence[_T], has_biases: bool, num_layers: int,
               bidirectional: bool, batch_first: bool) -> tuple[_T, _T, _T]:
    return _onnx_stack("lstm", input, h0, c0, params, has_biases, num_layers, bidirectional, batch_first)


def onnx_translations() -> dict[Any, Callable[..., Any]]:
    """The ``custom_translation_table`` for `torch.onnx.export(dynamo=True)`: the ``zoo::`` ops to ONNX."""
    return {torch.ops.zoo.rnn.default: _onnx_rnn, torch.ops.zoo.gru.default: _onnx_gru,
            torch.ops.zoo.lstm.default: _onnx_lstm}
