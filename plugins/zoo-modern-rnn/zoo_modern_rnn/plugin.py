"""Registers chapter 10's models. Imports no torch: builders are named as strings."""

from zoo_core import hookimpl


def _language_models(register):
    pass  # LSTM, GRU and deep-RNN language models (owner: language-model engineer)


def _seq2seq(register):
    pass  # the seq2seq encoder-decoder (owner: seq2seq engineer)


@hookimpl
def zoo_register_models(register):
    _language_models(register)
    _seq2seq(register)
