"""`LanguageModel`: what every recurrent language model of chapters 9 and 10 shares (d2l §9.5's ``RNNLMScratch`` and
§9.6's ``RNNLM``, the training and generation side).

Training: the logits of every position are scored against the next token with the cross-entropy, averaged over all
tokens of the batch (``unit = "tokens"``: the trainer weighs batches and reports speed in tokens); the epoch's
perplexity is ``exp`` of the token-weighted mean loss (`epoch_metrics`, d2l §9.3.2), not a mean of batch
perplexities. The optimiser is the book's minibatch SGD on ``lr``.

Generation: a one-step graph ``step`` (the previous token and the state in, next-token logits and the new state out;
every state tensor batch-major) that `zoo_core.decoding` drives, here (`predict`) and on ONNX Runtime after export.

The subclass contract (chapter 9's `zoo_rnn.rnn` and chapter 10's gated models follow it):

- ``__init__`` takes ``vocab_size`` and ``lr`` (and its own sizes) and calls ``self.save_hyperparameters()``;
- ``forward(X)``: ``X`` int64 (batch, seq) -> logits float32 (batch, seq, vocab_size), from the zero state;
- ``state_names``: the names of the state tensors (``("H",)``; an LSTM's ``("H", "C")``), in the order that
  `begin_state` returns them and `forward_step` takes and returns them;
- ``begin_state(batch_size, device=None)``: the zero state, a tuple of batch-major tensors ((batch, num_hiddens),
  or (batch, num_layers, num_hiddens) for stacked layers: a transposed ``nn.GRU`` state), on `device` or else on the
  model's (`LanguageModel.device`);
- ``forward_step(tokens, *state)``: tokens int64 (batch,) -> ``(logits (batch, vocab_size), *new state)``;
  feeding a sequence through it token by token from `begin_state` gives `forward`'s logits position by position;
- `forward` exports with a dynamic ``seq`` when it runs torch's recurrent modules (`zoo_core.onnx_rnn`); a model
  whose forward pass is a Python loop over time exports only its step graph: its spec says so
  (`zoo_rnn.graphs.lm_graphs(..., forward=False)`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zoo_core import GraphSpec, Model, ZooError
from zoo_rnn.graphs import lm_graphs


class LanguageModel(Model):
    """Base class of the zoo's language models; see the module docstring for what a subclass defines."""

    unit: ClassVar[str] = "tokens"
    state_names: ClassVar[tuple[str, ...]] = ("H",)
    example_steps: ClassVar[int] = 8
    """The sequence length of `example_inputs`."""

    vocab_size: int
    lr: float

    # --- what a subclass defines ---------------------------------------------------------------------------------
    def forward(self, X: Tensor) -> Tensor:  # (batch, seq) int64 -> (batch, seq, vocab_size)
        raise NotImplementedError

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """The zero state for `batch_size` sequences, batch-major, one tensor per name in `state_names`."""
        raise NotImplementedError

    def forward_step(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        """One time step: tokens (batch,) and the state -> ``(logits (batch, vocab_size), *new state)``."""
        raise NotImplementedError

    # --- training ------------------------------------------------------------------------------------------------
    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy of every position's logits against the next token, averaged over all tokens.

        Logits computed time-major and handed out as a (batch, seq, V) view (the RNNs') are scored where they
        lie, against the labels transposed: the mean over all tokens is the same, without copying the logits.
        """
        if y_hat.dim() == 3 and not y_hat.is_contiguous() and y_hat.transpose(0, 1).is_contiguous():
            y_hat, y = y_hat.transpose(0, 1), y.transpose(0, 1)
        return cross_entropy(y_hat.reshape(-1, y_hat.shape[-1]), y.reshape(-1))

    def epoch_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Adds the perplexity ``ppl = exp(loss)`` of the token-weighted mean loss (d2l §9.3.2)."""
        if "loss" not in means:
            return means
        loss = means["loss"]
        return {**means, "ppl": math.exp(loss) if loss < 709 else math.inf}  # exp overflows a float past 709

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.randint(0, self.vocab_size, (batch_size, self.example_steps)),)

    # --- graphs --------------------------------------------------------------------------------------------------
    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each state tensor's shape without the batch dimension: ``{"H": (32,)}``."""
        return {name: tuple(t.shape[1:]) for name, t in zip(self.state_names, self.begin_state(1, "cpu"))}

    def graph_specs(self, forward: bool = False) -> tuple[GraphSpec, ...]:
        """This model's graphs as `zoo_rnn.graphs.lm_graphs` declares them (the step graph; with `forward`, the
        forward graph too): what `predict` hands `zoo_core.decoding` when no spec is at hand."""
        return lm_graphs(self.vocab_size, self.state_shapes(), forward=forward)

    def graph_module(self, name: str) -> nn.Module:
        if name == "step":
            return StepGraph(self)
        return super().graph_module(name)

    def graph_inputs(self, name: str, dims: Mapping[str, int]) -> tuple[Tensor, ...]:
        """``model``: random tokens (batch, seq); ``step``: random tokens (batch,) and a random state in [-1, 1)."""
        device = self.device
        if name == "model":
            return (torch.randint(0, self.vocab_size, (dims["batch"], dims["seq"]), device=device),)
        if name == "step":
            state = self.begin_state(dims["batch"], device)
            return (torch.randint(0, self.vocab_size, (dims["batch"],), device=device),
                    *(torch.rand_like(s) * 2 - 1 for s in state))
        return super().graph_inputs(name, dims)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are (what `begin_state` uses when it is given no device)."""
        return next(self.parameters()).device

    # --- generation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, prefix: str, num_preds: int, vocab: Any, beam: int = 1) -> str:  # type: ignore[override]
        """`prefix` continued by `num_preds` tokens (d2l §9.5.4's ``predict``): the state warms up on the prefix,
        then greedy decoding (``beam=1``, the book's) or beam search picks each next token, through
        `zoo_core.decoding` on the step graph. Tokens are characters when `vocab` is a character vocabulary, else
        whitespace-separated words; tokens outside `vocab` are ``<unk>``. Returns the prefix and its continuation.
        """
        from zoo_core.decoding import TorchRunner, continue_prefixes

        if num_preds < 0:
            raise ZooError(f"num_preds must be at least 0, got {num_preds}")
        if beam < 1:
            raise ZooError(f"the beam size must be at least 1, got {beam}")
        chars = is_char_vocab(vocab)
        tokens = list(prefix) if chars else prefix.split()
        if not tokens:
            raise ZooError("the prefix is empty: a language model continues at least one token")
        was_training = self.training
        try:
            runner = TorchRunner(self, self.graph_specs())
            new = continue_prefixes(runner, [vocab[tokens]], num_preds, beam_size=beam)[0]
        finally:
            self.train(was_training)
        words = vocab.to_tokens(new)
        return prefix + "".join(words) if chars else " ".join([prefix.rstrip(), *words])


class StepGraph(nn.Module):
    """A language model's ``step`` graph as a module: its ``forward`` is the model's `forward_step` (shared
    parameters), with that method's explicit signature ``(tokens, H)`` or ``(tokens, H, C)``: torch.export reads
    the graph's inputs from the signature, and would take a ``*state`` as one tuple input."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.lm = model
        self.forward = model.forward_step  # type: ignore[method-assign]


class _CrossEntropy(torch.autograd.Function):
    """`cross_entropy`'s forward and backward: the backward reads the saved log-probabilities once.

    PyTorch's ``F.cross_entropy`` backward goes through ``nll_loss`` (a zero tensor the logits' size, then a
    scatter) and ``log_softmax``'s backward (exp, a row sum, a subtraction): four passes over (N, V) where
    ``(softmax - one_hot(y)) / N = (exp(log p) - one_hot(y)) / N`` takes two. With V = 28 and N = 32,768 tokens
    a batch, those passes were a fifth of a training step of the book's RNN language models.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, y: Tensor) -> Tensor:  # (N, V), (N,)
        N, V = logits.shape
        logp = torch.log_softmax(logits, -1)
        at_label = torch.arange(N, device=y.device) * V + y  # flat index of each row's label
        logp_y = logp.reshape(-1)[at_label]
        ctx.save_for_backward(logp, at_label, logp_y)
        return -logp_y.mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        logp, at_label, logp_y = ctx.saved_tensors
        d_logits = logp.exp()                                  # softmax
        d_logits.view(-1)[at_label] = logp_y.exp() - 1         # minus one_hot(y)
        return d_logits.mul_(grad / len(at_label)), None


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of `logits` (N, V) against `labels` (N,) int64: the value of ``F.cross_entropy``, with a
    leaner backward (`_CrossEntropy`)."""
    return _CrossEntropy.apply(logits, labels)


def is_char_vocab(vocab: Any) -> bool:
    """Whether `vocab`'s tokens (reserved ``<...>`` ones aside) are single characters."""
    return all(len(t) == 1 for t in vocab.idx_to_token if not (t.startswith("<") and t.endswith(">")))


__all__ = ["LanguageModel", "StepGraph", "cross_entropy", "is_char_vocab"]
