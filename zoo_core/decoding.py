"""Decoding: greedy search and beam search, written once for every generation model (d2l §9.5.4, §10.7.6, §10.8).

A model that generates declares its graphs (`zoo_core.GraphSpec`): an optional ``encoder`` graph and one ``step``
graph, ``(tokens, *other inputs) -> (logits, *new state, *extras)``. A `Runner` drives those graphs, on PyTorch
(`TorchRunner`) or on ONNX Runtime (`OnnxRunner`); `greedy`, `beam_search` and `continue_prefixes` only talk to a
Runner, so the same loop, token for token, runs a model or its exported files::

    runner = TorchRunner(model, spec.graph_specs("book"))           # or OnnxRunner({name: path}, graphs)
    state = runner.start(src, src_valid_len)                        # encoder outputs + zero state
    tokens = beam_search(runner, state, bos.expand(batch), max_len=9, beam_size=4, eos=eos)

Conventions (`zoo_core.GraphSpec`): every state and memory tensor is batch-major (dim 0 = batch), so choosing beam
rows is one ``index_select`` on dim 0 per tensor, whatever the model. The step graph's inputs after ``tokens`` are
named; those listed in its ``state`` are carried from step to step (replaced by the outputs after ``logits``), the
others are memory (constant: the encoder's outputs). A state input that no encoder produces starts as zeros.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from zoo_core.registry import GraphSpec, TensorSpec

State = dict[str, Tensor]
"""Everything a step graph takes besides ``tokens``, by input name: carried state and constant memory."""


class Runner(Protocol):
    """Drives the encoder and step graphs of one model, on PyTorch or on ONNX Runtime; tensors in and out."""

    vocab_size: int | None
    """The logits' last dimension as the step graph declares it (None where it is symbolic)."""

    def start(self, *inputs: Tensor, batch_size: int | None = None) -> State:
        """The state before the first step: the encoder's outputs on `inputs` (batch-major), plus zeros for every
        state input the encoder does not produce. A model without an encoder takes no inputs and `batch_size`."""
        ...

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State, tuple[Tensor, ...]]:
        """One step: `tokens` (batch,) int64 -> logits (batch, V), the new state (memory unchanged), the extras."""
        ...


# --- runners ----------------------------------------------------------------------------------------------------------

def _graph_roles(graphs: Sequence[GraphSpec]) -> tuple[GraphSpec | None, GraphSpec]:
    """The encoder graph (or None) and the step graph among a model's graphs; forward graphs are not used here."""
    encoders = [g for g in graphs if g.role == "encoder"]
    steps = [g for g in graphs if g.role == "step"]
    if len(steps) != 1 or len(encoders) > 1:
        raise ValueError(f"decoding needs one step graph and at most one encoder graph, got "
                         f"{[f'{g.name} ({g.role})' for g in graphs]}")
    step = steps[0]
    produced = {t.name for t in encoders[0].outputs} if encoders else set()
    orphans = [t.name for t in step.inputs[1:] if t.name not in step.state and t.name not in produced]
    if orphans:
        raise ValueError(f"step graph {step.name!r}: memory input(s) {orphans} are produced by no encoder graph")
    return (encoders[0] if encoders else None), step


def _dtype(spec: TensorSpec) -> torch.dtype:
    return getattr(torch, spec.dtype)


def _zeros(spec: TensorSpec, batch: int, device: torch.device | str = "cpu") -> Tensor:
    """The initial value of a state input no encoder produces: zeros, dim 0 the batch, other symbolic dims 0 (an
    empty key/value cache), fixed dims as declared."""
    shape = (batch, *(0 if isinstance(d, str) else d for d in spec.shape[1:]))
    return torch.zeros(shape, dtype=_dtype(spec), device=device)


class _GraphRunner:
    """What both runners share: the graph bookkeeping. Subclasses say how to call a graph (`_call`)."""

    def __init__(self, graphs: Sequence[GraphSpec]) -> None:
        self.encoder, self.step_graph = _graph_roles(graphs)
        last = self.step_graph.outputs[0].shape[-1] if self.step_graph.outputs[0].shape else None
        self.vocab_size: int | None = last if isinstance(last, int) else None
        self.device = torch.device("cpu")

    def _call(self, graph: GraphSpec, args: Sequence[Tensor]) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def start(self, *inputs: Tensor, batch_size: int | None = None) -> State:
        if self.encoder is None:
            if inputs or batch_size is None:
                raise ValueError(f"step graph {self.step_graph.name!r} has no encoder: start(batch_size=N) only")
            state: State = {}
        else:
            if len(inputs) != len(self.encoder.inputs):
                raise ValueError(f"encoder graph {self.encoder.name!r} takes {len(self.encoder.inputs)} inputs "
                                 f"({', '.join(t.name for t in self.encoder.inputs)}), got {len(inputs)}")
            outputs = self._call(self.encoder, inputs)
            state = {t.name: out for t, out in zip(self.encoder.outputs, outputs)}
            batch_size = len(inputs[0])
        # encoder outputs the step graph does not take (an encoder's attention weights) are dropped
        return {t.name: state[t.name] if t.name in state else _zeros(t, batch_size, self.device)
                for t in self.step_graph.inputs[1:]}

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State, tuple[Tensor, ...]]:
        graph = self.step_graph
        outputs = self._call(graph, [tokens, *(state[t.name] for t in graph.inputs[1:])])
        n = len(graph.state)
        new_state = {**state, **dict(zip(graph.state, outputs[1:1 + n]))}
        return outputs[0], new_state, tuple(outputs[1 + n:])


class TorchRunner(_GraphRunner):
    """Runs a model's graphs in PyTorch: ``model.graph_module(name)`` for each, in eval mode, without gradients.

    Tensors stay on the model's device (inputs are moved there).
    """

    def __init__(self, model: nn.Module, graphs: Sequence[GraphSpec]) -> None:
        super().__init__(graphs)
        model.eval()
        self.modules = {g.name: model.graph_module(g.name).eval()
                        for g in (self.encoder, self.step_graph) if g is not None}
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")

    @torch.no_grad()
    def _call(self, graph: GraphSpec, args: Sequence[Tensor]) -> tuple[Tensor, ...]:
        out = self.modules[graph.name](*(a.to(self.device) for a in args))
        out = (out,) if isinstance(out, Tensor) else tuple(out)
        if len(out) != len(graph.outputs):
            raise ValueError(f"graph {graph.name!r} returned {len(out)} outputs, its spec declares "
                             f"{len(graph.outputs)} ({', '.join(t.name for t in graph.outputs)})")
        return out


class OnnxRunner(_GraphRunner):
    """Runs a model's exported graphs on ONNX Runtime: `files` maps a graph name to its ``.onnx`` file.

    The interface is torch tensors (CPU), as for `TorchRunner`; each call converts to numpy and back without copies
    where the layout allows. Inputs are fed by name (the names the spec gives the export), outputs taken in the
    spec's order.
    """

    def __init__(self, files: Mapping[str, str | os.PathLike], graphs: Sequence[GraphSpec],
                 provider: str = "CPUExecutionProvider") -> None:
        from zoo_core.parity import _session

        super().__init__(graphs)
        self.sessions = {}
        for graph in (self.encoder, self.step_graph):
            if graph is None:
                continue
            if graph.name not in files:
                raise ValueError(f"no ONNX file for graph {graph.name!r} (got {', '.join(files) or 'none'})")
            session = _session(files[graph.name], provider)
            # an exporter may drop an input the graph never reads: feed only the ones the session declares
            names = [i.name for i in session.get_inputs()]
            unknown = [n for n in names if n not in {t.name for t in graph.inputs}]
            if unknown or len(session.get_outputs()) != len(graph.outputs):
                raise ValueError(f"{files[graph.name]} does not match graph {graph.name!r}: inputs {names}, "
                                 f"{len(session.get_outputs())} outputs (spec: {[t.name for t in graph.inputs]}, "
                                 f"{len(graph.outputs)} outputs)")
            self.sessions[graph.name] = (session, names)

    def _call(self, graph: GraphSpec, args: Sequence[Tensor]) -> tuple[Tensor, ...]:
        session, names = self.sessions[graph.name]
        by_name = {t.name: a for t, a in zip(graph.inputs, args)}
        feed = {n: np.ascontiguousarray(by_name[n].detach().cpu().numpy()) for n in names}
        return tuple(torch.from_numpy(np.asarray(out)) for out in session.run(None, feed))


# --- search -----------------------------------------------------------------------------------------------------------

def _take(state: State, rows: Tensor) -> State:
    """Rows `rows` of every state and memory tensor (all batch-major): beam expansion and reordering."""
    return {name: t.index_select(0, rows.to(t.device)) for name, t in state.items()}


def _log_probs(logits: Tensor) -> Tensor:
    """log softmax in float64: the scores of both searches. float64 keeps the order of float32 logits (the gaps
    between distinct float32 values survive the subtraction of the log-sum-exp), so ranking by it is ranking by
    the logits, and summing log-probabilities over steps does not merge close candidates. (MPS has no float64:
    there the scores live on the CPU, a copy of (batch, V) per step.)"""
    if logits.device.type == "mps":
        logits = logits.cpu()
    return logits.double().log_softmax(-1)


def _cut(tokens: list[int], eos: int | None) -> list[int]:
    return tokens[:tokens.index(eos)] if eos is not None and eos in tokens else tokens


@torch.no_grad()
def greedy(runner: Runner, state: State, first_tokens: Tensor, max_len: int, eos: int | None = None) -> list[list[int]]:
    """Greedy search (d2l §10.8.1): at each step the most likely token, for a batch of examples at once.

    Args:
        runner: the model's graphs; `state` is ``runner.start(...)`` (or a warmed-up state) for these examples.
        first_tokens: (batch,) int64, the token each example starts from (``<bos>``, or a prefix's last token).
        max_len: the most steps (tokens generated, ``<eos>`` included).
        eos: the end-of-sequence token: an example stops there; None (a language model) runs `max_len` steps.

    Returns:
        The generated tokens of each example, without ``<eos>``.

    The choice at each step is the argmax of the cumulative log-probability (float64), which is the argmax of the
    logits, taken with the same arithmetic and the same tie rule (the lowest index) as `beam_search`, so that beam
    size 1 reproduces greedy to the token. A finished example's score is -inf, as a beam's dead row is, and the loop
    stops when every example has finished.
    """
    tokens = first_tokens
    scores: Tensor | None = None
    steps: list[Tensor] = []
    for _ in range(max_len):
        logits, state, _ = runner.step(tokens, state)
        if scores is None:
            scores = torch.zeros(len(first_tokens), dtype=torch.float64, device=logits.device)
        cand = scores[:, None] + _log_probs(logits)           # (batch, V)
        tokens = cand.argmax(-1)                               # the first maximum on ties (torch.argmax's rule)
        scores = cand.gather(1, tokens[:, None]).squeeze(1)
        if eos is not None:
            scores = scores.masked_fill(tokens == eos, -math.inf)
        steps.append(tokens)
        if eos is not None and not torch.isfinite(scores).any():  # one host sync per step: every example is done
            break
    if not steps:
        return [[] for _ in range(len(first_tokens))]
    return [_cut(row, eos) for row in torch.stack(steps, 1).tolist()]


@torch.no_grad()
def beam_search(runner: Runner, state: State, first_tokens: Tensor, max_len: int, beam_size: int,
                eos: int | None = None, alpha: float = 0.75) -> list[list[int]]:
    """Beam search (d2l §10.8.3), batched: the best sequence of each example by log P / L^alpha.

    At each step every hypothesis of the beam is extended by every token, and the `beam_size` extensions of highest
    log-probability are kept, out of beam_size * V (the book's rule). An extension ending in `eos` is complete: it
    leaves the beam for the example's candidate set (so the beam narrows); when `max_len` steps are done, the
    hypotheses still in the beam are complete too. The answer is the complete candidate with the highest

        score = log P(y_1, ..., y_L | inputs) / L^alpha          (d2l eq. 10.8.4, alpha = 0.75)

    where L counts the generated tokens, ``<eos>`` included, and log P includes ``<eos>``'s probability. Unlike the
    book's illustration, which scores every prefix the beam ever held, only complete hypotheses are candidates: a
    sentence cut before its ``<eos>`` is not a translation. Tokens are returned without ``<eos>``.

    Beam size 1 gives exactly `greedy`'s tokens: the one kept extension is the argmax of the same float64 scores
    (a stable descending sort takes the lowest index on ties, as argmax does); if it is ``<eos>`` it leaves the beam,
    which is then empty, so the example stops where greedy stops; otherwise it continues from the state greedy has
    (selecting row i of a one-row beam is the identity). A finished example's rows have score -inf in both, and are
    fed the same token, so no row ever differs. Its single complete candidate is greedy's sequence.

    Args:
        runner, state, first_tokens, max_len, eos: as for `greedy`.
        beam_size: hypotheses kept per example (>= 1).
        alpha: the length penalty's exponent; 0 ranks by log P alone (favouring short outputs).

    Rows are reordered after each step with one ``index_select`` on dim 0 of every state and memory tensor.
    """
    if beam_size < 1:
        raise ValueError(f"beam size must be at least 1, got {beam_size}")
    batch, k = len(first_tokens), beam_size
    expand = torch.arange(batch).repeat_interleave(k)           # example b's k rows are b*k ... b*k + k - 1
    state = _take(state, expand)
    tokens = first_tokens.index_select(0, expand.to(first_tokens.device))
    scores: Tensor | None = None                                # (batch, k) cumulative log P; -inf: no hypothesis
    seqs = torch.zeros(batch, k, 0, dtype=torch.int64)
    done: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    for t in range(max_len):
        logits, state, _ = runner.step(tokens, state)
        logp = _log_probs(logits).view(batch, k, -1)              # (batch, k, V)
        vocab = logp.shape[-1]
        if scores is None:  # one hypothesis per example to begin with: k copies would fill the beam with duplicates
            scores = torch.full((batch, k), -math.inf, dtype=torch.float64, device=logp.device)
            scores[:, 0] = 0.0
            seqs = seqs.to(logp.device)
        cand = (scores[:, :, None] + logp).view(batch, k * vocab)
        cand, order = torch.sort(cand, dim=1, descending=True, stable=True)  # stable: the lowest index on ties
        scores, order = cand[:, :k], order[:, :k]
        parent, token = order // vocab, order % vocab            # (batch, k): which hypothesis, extended by what
        seqs = torch.cat([seqs.gather(1, parent[:, :, None].expand(-1, -1, t)), token[:, :, None]], dim=2)
        live = torch.isfinite(scores)
        complete = live if t == max_len - 1 else live & (token == eos) if eos is not None else None
        if complete is not None and complete.any():  # one transfer for all of this step's complete hypotheses
            which, totals, found = complete.nonzero().tolist(), scores[complete].tolist(), seqs[complete].tolist()
            for (b, _), total, toks in zip(which, totals, found):
                done[b].append((total / (t + 1) ** alpha, _cut(toks, eos)))
            scores = scores.masked_fill(complete, -math.inf)     # complete hypotheses leave the beam
        if not torch.isfinite(scores).any():
            break
        rows = (parent + torch.arange(batch, device=parent.device)[:, None] * k).view(-1)
        state = _take(state, rows)
        tokens = token.view(-1)
    # max() keeps the first of equal scores: the one completed earliest, then the higher-ranked
    return [max(cands, key=lambda c: c[0])[1] if cands else [] for cands in done]


@torch.no_grad()
def continue_prefixes(runner: Runner, prefixes: Sequence[Sequence[int]], num_preds: int, beam_size: int = 1,
                      eos: int | None = None, alpha: float = 0.75) -> list[list[int]]:
    """A language model's continuation of each prefix (d2l §9.5.4's ``predict``, batched): `num_preds` tokens.

    The state warms up on each prefix as the book does it: from the zero state, the prefix's tokens but the last
    are fed one at a time through the step graph (their predictions are ignored); decoding then starts from the
    last prefix token, greedy (`beam_size` 1, the book's) or beam search. Prefixes are batched by length, one batch
    per distinct length: rows of a batch then always hold states of the same shape, which a state that grows by a
    position at every step needs (a Transformer's key/value cache: rows warmed up on different numbers of tokens
    could not share one tensor).

    Returns the generated tokens of each prefix (not the prefix itself), in the order of `prefixes`.
    """
    if any(len(p) == 0 for p in prefixes):
        raise ValueError("every prefix needs at least one token")
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prefixes):
        by_length.setdefault(len(p), []).append(i)
    found: list[list[int]] = [[] for _ in prefixes]
    for length, rows in by_length.items():
        tokens = torch.tensor([list(prefixes[i]) for i in rows], dtype=torch.int64)  # (group, length)
        state = runner.start(batch_size=len(rows))
        for t in range(length - 1):
            _, state, _ = runner.step(tokens[:, t], state)
        first = tokens[:, -1]
        group = (greedy(runner, state, first, num_preds, eos) if beam_size == 1
                 else beam_search(runner, state, first, num_preds, beam_size, eos, alpha))
        for i, generated in zip(rows, group):
            found[i] = generated
    return found


__all__ = ["OnnxRunner", "Runner", "State", "TorchRunner", "beam_search", "continue_prefixes", "greedy"]
