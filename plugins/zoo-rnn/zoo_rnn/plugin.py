"""Registers chapter 9's models. Imports no torch: builders are named as strings.

`book`: the book's recipe (d2l §9.5-9.6): The Time Machine in characters (vocabulary 28), batch 1024, windows of 32
steps (the first 10,000 for training, the next 5,000 for validation), 32 hidden units, SGD lr 1, 100 epochs, gradient
clipping at norm 1. `tiny`: the same shapes' vocabulary on synthetic text, 8 hidden units, a few hundred windows.
"""

from __future__ import annotations

from zoo_core import ModelSpec, Preset, hookimpl

from zoo_rnn.graphs import lm_graphs

VOCAB = 28  # the Time Machine's character vocabulary: 26 letters, space, <unk> (the synthetic text keeps it)
BOOK = {"num_hiddens": 32, "lr": 1.0}
TINY = {"num_hiddens": 8, "lr": 1.0}
BOOK_DATA = {"batch_size": 1024, "num_steps": 32, "num_train": 10000, "num_val": 5000}
TINY_DATA = {"synthetic": True, "batch_size": 16, "num_steps": 8, "num_train": 64, "num_val": 32}
SCRATCH_GRAPH = ("one time step (the previous token and H in, logits and the new H out); no forward graph: the "
                 "from-scratch loop over time steps is Python, which torch.export unrolls at the traced length")


def num_params(vocab_size: int, num_hiddens: int, concise: bool) -> int:
    """W_xh, W_hh, b_h (nn.RNN has two biases, b_ih and b_hh), W_hq, b_q."""
    biases = 2 * num_hiddens if concise else num_hiddens
    return vocab_size * num_hiddens + num_hiddens * num_hiddens + biases + num_hiddens * vocab_size + vocab_size


def _presets(book: dict, tiny: dict, concise: bool) -> dict[str, Preset]:
    forward, summary = concise, "" if concise else SCRATCH_GRAPH  # the scratch model exports its step graph only
    return {
        "book": Preset(model={"vocab_size": VOCAB, **book}, data=BOOK_DATA,
                       train={"max_epochs": 100, "gradient_clip_val": 1.0},
                       num_params=num_params(VOCAB, book["num_hiddens"], concise),
                       graphs=lm_graphs(VOCAB, {"H": (book["num_hiddens"],)}, forward=forward, summary=summary),
                       summary="The Time Machine (characters), batch 1024, 32 steps, 32 hidden, lr 1, 100 epochs, "
                               "clip 1 (the book's)"),
        "tiny": Preset(model={"vocab_size": VOCAB, **tiny}, data=TINY_DATA,
                       train={"max_epochs": 2, "gradient_clip_val": 1.0},
                       num_params=num_params(VOCAB, tiny["num_hiddens"], concise),
                       graphs=lm_graphs(VOCAB, {"H": (tiny["num_hiddens"],)}, forward=forward, summary=summary),
                       summary="synthetic text over the book's 28 characters, 8 hidden units"),
    }


@hookimpl
def zoo_register_models(register):
    common = {"chapter": 9, "task": "language-modeling", "dataset": "time-machine",
              "inputs": ["X: int64[batch, seq]"], "outputs": [f"logits: float32[batch, seq, {VOCAB}]"]}
    register(ModelSpec(
        name="rnn-lm-scratch", builder="zoo_rnn.rnn:RNNLMScratch", section="9.5",
        summary="RNN language model from scratch: own W_xh, W_hh, b_h, W_hq, b_q and tanh loop over time",
        presets=_presets(BOOK, TINY, concise=False), tags=("scratch",), **common))
    register(ModelSpec(
        name="rnn-lm", builder="zoo_rnn.rnn:RNNLM", section="9.6",
        summary="RNN language model, concise: nn.RNN and an nn.Linear output layer",
        presets=_presets(BOOK, TINY, concise=True), tags=("concise",), **common))
