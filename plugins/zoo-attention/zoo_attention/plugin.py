"""Registers chapter 11's models and the Nadaraya-Watson data. Imports no torch: builders are named as strings.

One function per model family; each family's engineer owns its function.
"""

from zoo_core import hookimpl


def _nadaraya_watson(register):
    """Nadaraya-Watson attention pooling (d2l §11.2)."""


def _bahdanau(register):
    """The RNN encoder-decoder with Bahdanau (additive) attention (d2l §11.4)."""


def _transformer(register):
    """The Transformer encoder-decoder (d2l §11.7)."""


def _vit(register):
    """The Vision Transformer (d2l §11.8)."""


def _pretraining(register):
    """GPT-mini (decoder-only, causal LM) and BERT-mini (encoder-only, masked LM) on The Time Machine (d2l §11.9)."""


@hookimpl
def zoo_register_models(register):
    _nadaraya_watson(register)
    _bahdanau(register)
    _transformer(register)
    _vit(register)
    _pretraining(register)
