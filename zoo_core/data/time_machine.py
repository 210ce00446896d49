"""The Time Machine (d2l §9.2-9.3): H. G. Wells' novel as a character (or word) corpus, cut into windows.

The book's pipeline, exactly (d2l 1.0.3 ``TimeMachine``): keep the letters, lower-case them, turn every other run of
characters into one space; tokens are characters (vocabulary of 28: 26 letters, space, ``<unk>``; corpus of 173,428
tokens). Window ``i`` is ``X = corpus[i : i + num_steps]`` with ``Y = corpus[i + 1 : i + num_steps + 1]``, for every
``i`` in ``range(len(corpus) - num_steps)``; the book trains on windows ``[0, num_train)`` and validates on
``[num_train, num_train + num_val)``, in that order (its last training windows share text with the first validation
ones; kept, so that figures compare).

The windows are built once, as one ``unfold`` of the corpus tensor (a view; ``load`` copies it into two contiguous
int64 tensors), never per sample.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from zoo_core.data.files import BOOK_URL, DataFile, find_data_files
from zoo_core.data.module import DataModule, seeded_generator
from zoo_core.errors import ZooError
from zoo_core.text import TOKEN_KINDS, Vocab, tokenize

FILE = DataFile("timemachine.txt", "090b5e7e70c295757f55df93cb0a180b9691891a", BOOK_URL + "timemachine.txt")
PANGRAM = "the quick brown fox jumps over the lazy dog"  # opens the synthetic text: every letter is in the vocabulary


class TimeMachine(DataModule):
    """The Time Machine as ``(X, Y)`` windows of token indices, int64 ``(n, num_steps)`` each (Y is X shifted by one).

    Args:
        batch_size: windows per batch (the book: 1024).
        num_steps: tokens per window (the book: 32).
        num_train: training windows: the first `num_train` of the corpus (the book: 10,000).
        num_val: validation windows, right after the training ones (the book: 5,000).
        token: ``"char"`` (the book's) or ``"word"`` (whitespace-separated words, §9.2's word vocabulary).
        all_windows: train on the whole corpus, not only its first `num_train` windows: the book's `num_train`
            windows, plus every window that starts after the validation text (``i >= num_train + num_val +
            num_steps``, so none shares a token with a validation window). Validation stays the book's windows.
        synthetic: instead of the book's file, random words over the same 26 letters and the space (opening with a
            pangram, so the vocabulary is the book's 28 tokens and the shapes are the book's); no file needed. Its
            length is just what the windows need.
        seed: seed of the synthetic text.
        data_dir: where to look first for ``timemachine.txt`` (not a hyper-parameter: not recorded).
    """

    def __init__(self, batch_size: int = 1024, num_steps: int = 32, num_train: int = 10000, num_val: int = 5000,
                 token: str = "char", all_windows: bool = False, synthetic: bool = False, seed: int = 0,
                 data_dir: str | None = None) -> None:
        self.save_hyperparameters(ignore=["data_dir"])
        self.data_dir = data_dir
        if token not in TOKEN_KINDS:
            tokenize("", token)  # raises the one-line "unknown token kind" error
        if num_steps < 1 or num_train < 1 or num_val < 0:
            raise ZooError(f"time-machine: num_steps and num_train must be positive and num_val >= 0, got "
                           f"num_steps={num_steps}, num_train={num_train}, num_val={num_val}")

    # --- what prediction needs, without the data ---------------------------------------------------------------------
    @staticmethod
    def preprocess(text: str) -> str:
        """The book's preprocessing: every run of non-letters becomes one space, then lower-case."""
        return re.sub("[^A-Za-z]+", " ", text).lower()

    @staticmethod
    def tokenize(text: str, token: str = "char") -> list[str]:
        """Tokens of already `preprocess`-ed text: characters (the book's) or words."""
        return tokenize(text, token)

    # --- loading -----------------------------------------------------------------------------------------------------
    @classmethod
    def locate(cls, data_dir: str | None = None, download: bool = True) -> Path:
        """The data folder holding ``timemachine.txt`` (SHA-1 checked), downloading it from the book's URL if needed."""
        return find_data_files("time-machine", [FILE], data_dir, download=download)

    def raw_text(self) -> str:
        """The text before preprocessing: the book's file, or the synthetic stand-in."""
        if self.synthetic:
            return self._synthetic_text()
        return (self.locate(self.data_dir) / FILE.path).read_text(encoding="utf-8")

    def build(self, raw_text: str, vocab: Vocab | None = None) -> tuple[Tensor, Vocab]:
        """The book's ``build``: the corpus as an int64 tensor of token indices, and the vocabulary (built on this
        text unless given)."""
        tokens = self.tokenize(self.preprocess(raw_text), self.token)
        if vocab is None:
            vocab = Vocab(tokens)
        return torch.tensor(vocab[tokens], dtype=torch.int64), vocab

    def load(self) -> dict[str, tuple[Tensor, ...]]:
        corpus, self.vocab = self.build(self.raw_text())
        s, n_train, n_val = self.num_steps, self.num_train, self.num_val
        windows = corpus.unfold(0, s + 1, 1)  # (len(corpus) - s, s + 1): window i = corpus[i : i + s + 1], a view
        if n_train + n_val > len(windows):
            raise ZooError(f"time-machine: num_train + num_val = {n_train + n_val} windows, but the corpus of "
                           f"{len(corpus)} tokens has only {len(windows)} of {s} steps")
        train = windows[:n_train]
        if self.all_windows:
            train = torch.cat([train, windows[n_train + n_val + s:]])
        val = windows[n_train:n_train + n_val]
        return {"train": (train[:, :-1].contiguous(), train[:, 1:].contiguous()),
                "val": (val[:, :-1].contiguous(), val[:, 1:].contiguous())}

    def _synthetic_text(self) -> str:
        """Random words (a lexicon of 64 drawn from the letters) after a pangram, as long as the windows need.

        Words, not letters drawn independently, so that a language model has something to learn in a short test.
        """
        g = seeded_generator(self.seed, "time-machine-synthetic")
        letters = "abcdefghijklmnopqrstuvwxyz"
        lexicon = ["".join(letters[i] for i in torch.randint(0, 26, (int(n),), generator=g))
                   for n in torch.randint(1, 8, (64,), generator=g)]
        need = self.num_train + self.num_val + self.num_steps + 1  # tokens the windows need
        count = need if self.token == "word" else need // 2 + 1  # a word and its space take at least 2 characters
        words = [lexicon[i] for i in torch.randint(0, len(lexicon), (count,), generator=g).tolist()]
        return PANGRAM + " " + " ".join(words)

    # --- what the model and the run need ------------------------------------------------------------------------------
    @property
    def vocab(self) -> Vocab:
        """The vocabulary (loads the data on first use)."""
        if "vocab" not in self.__dict__:
            self.splits()
        return self.__dict__["vocab"]

    @vocab.setter
    def vocab(self, value: Vocab) -> None:
        self.__dict__["vocab"] = value

    def vocabs(self) -> dict[str, Vocab]:
        return {"vocab": self.vocab}

    def model_hparams(self) -> dict[str, int]:
        return {"vocab_size": len(self.vocab)}
