"""The graphs a language model exports (`zoo_core.GraphSpec`), declared without torch so that plugin.py can use them.

Every language model of chapters 9 and 10 has the same two graphs (DESIGN §4, INTERFACES §5):

- ``model`` (role ``forward``): ``X: int64[batch, seq] -> logits: float32[batch, seq, V]``, a whole sequence from the
  zero state, with ``batch`` and ``seq`` symbolic. A model whose forward pass is a Python loop over time steps
  cannot keep ``seq`` symbolic in torch.export and leaves this graph out (``forward=False``).
- ``step`` (role ``step``): ``tokens: int64[batch]`` and the recurrent state (one input per state tensor,
  batch-major) -> ``logits: float32[batch, V]`` and the new state, which `zoo_core.decoding` drives for greedy and
  beam search on PyTorch and ONNX Runtime alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from zoo_core import GraphSpec


def state_specs(state: Mapping[str, Sequence[int]], suffix: str = "") -> tuple[str, ...]:
    """Tensor specs of a recurrent state, batch first: ``{"H": (32,)}`` -> ``("H: float32[batch, 32]",)``."""
    return tuple(f"{name}{suffix}: float32[{', '.join(['batch', *map(str, shape)])}]"
                 for name, shape in state.items())


def lm_graphs(vocab_size: int, state: Mapping[str, Sequence[int]], *, forward: bool = True,
              summary: str = "") -> tuple[GraphSpec, ...]:
    """The graphs of a language model over `vocab_size` tokens whose recurrent state is `state` (name -> shape
    without the batch dimension, in the order the step graph takes and returns them: ``{"H": (32,)}``, or
    ``{"H": (2, 32)}`` for two layers, ``{"H": (32,), "C": (32,)}`` for an LSTM).

    `forward`: include the forward graph ``model``; `summary`: the step graph's line in ``zoo info`` (say there why
    a model has no forward graph). The step graph's new state is named ``<name>_new``.
    """
    V = vocab_size
    step = GraphSpec(
        "step", ("tokens: int64[batch]", *state_specs(state)),
        (f"logits: float32[batch, {V}]", *state_specs(state, "_new")), role="step", state=tuple(state),
        summary=summary or "one time step: the previous token and the state in, next-token logits and the new "
                           "state out (greedy and beam search drive it)")
    if not forward:
        return (step,)
    model = GraphSpec("model", ("X: int64[batch, seq]",), (f"logits: float32[batch, seq, {V}]",),
                      summary="the whole sequence from the zero state (training and scoring)")
    return model, step
