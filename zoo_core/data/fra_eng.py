"""English-French sentence pairs (d2l §10.5), the book's machine-translation data, as fixed-length index tensors.

d2l 1.0.3's ``MTFraEng`` pipeline, exactly: non-breaking spaces become spaces, text is lower-cased, a space is put
before ``, . ! ?`` when none precedes it; each tab-separated line with two columns is a pair, split on spaces, with
``<eos>`` appended; each side is trimmed or padded with ``<pad>`` to ``num_steps``, the targets get ``<bos>`` in front;
the vocabularies are built with ``min_freq=2`` (``<pad>``, ``<bos>``, ``<eos>`` are in them because they are frequent,
not reserved). With the book's defaults: 194 English and 214 French tokens.

The book's quirks, kept by default (``book_quirks=True``) so that figures compare with the book's:

- **one pair more**: the book's tokeniser stops at line ``i > num_train + num_val``, so it keeps ``num_train + num_val
  + 1`` pairs; training is the first `num_train`, validation all the rest (129 pairs, not 128).
- **vocabularies on both splits**: the vocabularies (and their ``min_freq`` counts) are built on the training and the
  validation pairs together, so validation has fewer ``<unk>`` than unseen data would.

``book_quirks=False`` keeps exactly ``num_train + num_val`` pairs and builds the vocabularies on the training pairs
only (the validation sentences then map unseen words to ``<unk>``).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from zoo_core.data.files import BOOK_URL, DataFile, find_data_files
from zoo_core.data.module import DataModule, seeded_generator
from zoo_core.errors import DataNotFoundError, IntegrityError, ZooError
from zoo_core.text import BOS, EOS, PAD, Vocab

FILE = DataFile("fra-eng/fra.txt", "c43f99dce27311d3afd4d3e0716848194cfcc103")
ZIP = DataFile("fra-eng.zip", "94646ad1522d915e7b0f9296181140edcf86a4f5", BOOK_URL + "fra-eng.zip")

Arrays = tuple[Tensor, Tensor, Tensor, Tensor]
_SPACE_BEFORE = re.compile(r"(?<=[^ ])([,.!?])")  # a mark not preceded by a space (nor at the very start)


def _download(root: Path) -> None:
    """The book's download: ``fra-eng.zip`` (SHA-1 checked), extracted into `root` (it holds ``fra-eng/fra.txt``)."""
    zip_root = find_data_files("fra-eng", [ZIP], root)
    with zipfile.ZipFile(zip_root / ZIP.path) as z:
        z.extract(FILE.path, root)


class FraEng(DataModule):
    """English-French pairs, as ``(src, tgt_in, src_valid_len, tgt_out)`` int64 tensors in the book's order.

    Shapes: ``src``, ``tgt_in``, ``tgt_out`` are ``(n, num_steps)``; ``src_valid_len`` is ``(n,)`` (the non-pad
    source tokens, ``<eos>`` included). ``tgt_in`` is ``<bos>`` followed by the target, ``tgt_out`` the target
    (teacher forcing: ``tgt_out[:, t]`` follows ``tgt_in[:, t]``).

    Args:
        batch_size: pairs per batch (the book: 128).
        num_steps: tokens per sentence after padding or trimming (the book: 9).
        num_train: training pairs, the first of the file (the book: 512).
        num_val: validation pairs, right after them (the book: 128; 129 with the book's quirk, see the module).
        min_freq: the vocabularies keep tokens seen at least this often (the book: 2).
        book_quirks: keep the book's extra validation pair and its vocabularies built on both splits (default);
            False: exactly `num_val` pairs, vocabularies from the training pairs only.
        synthetic: instead of the book's file, made-up pairs of a small word-for-word language (their own
            vocabularies), for fast tests; no file needed.
        seed: seed of the synthetic pairs.
        data_dir: where to look first for ``fra-eng/fra.txt`` (not a hyper-parameter: not recorded).
    """

    def __init__(self, batch_size: int = 128, num_steps: int = 9, num_train: int = 512, num_val: int = 128,
                 min_freq: int = 2, book_quirks: bool = True, synthetic: bool = False, seed: int = 0,
                 data_dir: str | None = None) -> None:
        self.save_hyperparameters(ignore=["data_dir"])
        self.data_dir = data_dir
        if num_steps < 1 or num_train < 1 or num_val < 0:
            raise ZooError(f"fra-eng: num_steps and num_train must be positive and num_val >= 0, got "
                           f"num_steps={num_steps}, num_train={num_train}, num_val={num_val}")

    # --- text processing (static: prediction uses it without the data) ------------------------------------------------
    @staticmethod
    def preprocess(text: str) -> str:
        """The book's ``_preprocess``: non-breaking spaces to spaces, lower-case, a space before ``, . ! ?`` that
        follow a non-space character (not at the very start of the text).

        One regular expression instead of the book's loop over characters; the same text (checked on all of
        ``fra.txt``). The book's loop looks at the character before in the text *before* lower-casing, which drifts
        after a character whose lower case is longer (``"İ"``): here the lower-cased text is looked at, as intended.
        """
        text = text.replace("\u202f", " ").replace("\xa0", " ")
        return _SPACE_BEFORE.sub(r" \1", text.lower())

    @staticmethod
    def split_pairs(text: str, max_examples: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
        """The book's ``_tokenize`` of preprocessed text: the lines with exactly two tab-separated columns, each
        split on spaces (empty tokens dropped) with ``<eos>`` appended. Like the book's, it stops at line index
        ``i > max_examples``: at most ``max_examples + 1`` lines are read."""
        src, tgt = [], []
        for i, line in enumerate(text.split("\n")):
            if max_examples and i > max_examples:
                break
            parts = line.split("\t")
            if len(parts) == 2:
                src.append([t for t in f"{parts[0]} {EOS}".split(" ") if t])
                tgt.append([t for t in f"{parts[1]} {EOS}".split(" ") if t])
        return src, tgt

    @staticmethod
    def pad_or_trim(sentences: Sequence[Sequence[str]], num_steps: int) -> list[list[str]]:
        return [list(s[:num_steps]) if len(s) > num_steps else [*s, *[PAD] * (num_steps - len(s))] for s in sentences]

    @staticmethod
    def encode(sentences: Sequence[Sequence[str]], vocab: Vocab) -> tuple[Tensor, Tensor]:
        """Token lists of equal length -> (indices int64 (n, steps), valid lengths int64 (n,): non-``<pad>``)."""
        steps = len(sentences[0]) if len(sentences) else 0
        array = torch.tensor(vocab[list(sentences)], dtype=torch.int64).reshape(len(sentences), steps)
        return array, (array != vocab[PAD]).sum(1)

    @classmethod
    def encode_source(cls, sentences: Sequence[str], src_vocab: Vocab, num_steps: int) -> tuple[Tensor, Tensor]:
        """Raw English sentences -> ``(src int64 (n, num_steps), src_valid_len int64 (n,))``, as the book's
        ``build`` makes them: preprocessed, ``<eos>`` appended, padded or trimmed, unknown words ``<unk>``."""
        tokens = [[t for t in f"{cls.preprocess(s)} {EOS}".split(" ") if t] for s in sentences]
        return cls.encode(cls.pad_or_trim(tokens, num_steps), src_vocab)

    # --- loading ------------------------------------------------------------------------------------------------------
    @classmethod
    def locate(cls, data_dir: str | None = None, download: bool = True) -> Path:
        """The data folder holding ``fra-eng/fra.txt`` (SHA-1 checked); if no folder has it, the book's
        ``fra-eng.zip`` is downloaded (or found) and extracted."""
        try:
            return find_data_files("fra-eng", [FILE], data_dir, download=_download if download else False)
        except DataNotFoundError as e:
            hint = f"fra-eng/fra.txt is the text inside the book's {BOOK_URL}fra-eng.zip; either will do"
            raise DataNotFoundError(f"{e} ({hint})") from None

    def raw_text(self) -> str:
        """The whole text of ``fra.txt`` (tab-separated pairs), or the synthetic stand-in."""
        if self.synthetic:
            return self._synthetic_text()
        return (self.locate(self.data_dir) / FILE.path).read_text(encoding="utf-8")

    def _pairs(self, raw_text: str, max_examples: int) -> tuple[list[list[str]], list[list[str]]]:
        # Only the lines the tokeniser reads are preprocessed (the book preprocesses all 167,130): the same tokens,
        # since preprocessing is character by character and looks back one character only.
        head = "\n".join(raw_text.split("\n", max_examples + 1)[:max_examples + 1]) if max_examples else raw_text
        return self.split_pairs(self.preprocess(head), max_examples)

    def _build_arrays(self, raw_text: str, src_vocab: Vocab | None = None, tgt_vocab: Vocab | None = None,
                      vocab_rows: int | None = None) -> tuple[Arrays, Vocab, Vocab]:
        """The book's ``_build_arrays``: the four tensors and the two vocabularies (built on the first `vocab_rows`
        pairs, default all, unless given)."""
        max_examples = self.num_train + self.num_val
        src, tgt = self._pairs(raw_text, max_examples)
        if not self.book_quirks:
            src, tgt = src[:max_examples], tgt[:max_examples]
        src = self.pad_or_trim(src, self.num_steps)
        tgt = [[BOS, *s] for s in self.pad_or_trim(tgt, self.num_steps)]
        if src_vocab is None:
            src_vocab = Vocab(src[:vocab_rows], min_freq=self.min_freq)
        if tgt_vocab is None:
            tgt_vocab = Vocab(tgt[:vocab_rows], min_freq=self.min_freq)
        src_array, src_valid_len = self.encode(src, src_vocab)
        tgt_array, _ = self.encode(tgt, tgt_vocab)
        return (src_array, tgt_array[:, :-1], src_valid_len, tgt_array[:, 1:]), src_vocab, tgt_vocab

    def load(self) -> dict[str, tuple[Tensor, ...]]:
        raw = self.raw_text()
        rows = None if self.book_quirks else self.num_train
        arrays, self.src_vocab, self.tgt_vocab = self._build_arrays(raw, vocab_rows=rows)
        if len(arrays[0]) <= self.num_train:
            raise ZooError(f"fra-eng: only {len(arrays[0])} sentence pairs, not more than num_train={self.num_train}")
        return {"train": tuple(a[:self.num_train] for a in arrays),
                "val": tuple(a[self.num_train:] for a in arrays)}

    def build(self, src_sentences: Sequence[str], tgt_sentences: Sequence[str] | None = None) -> Arrays:
        """The book's ``build``: raw sentence pairs -> ``(src, tgt_in, src_valid_len, tgt_out)`` with this data's
        vocabularies (targets default to empty sentences: only ``<eos>``). As in the book, at most ``num_train +
        num_val + 1`` pairs are kept, and a sentence holding a tab or a newline breaks the pairing: one line each."""
        if tgt_sentences is None:
            tgt_sentences = [""] * len(src_sentences)
        if len(tgt_sentences) != len(src_sentences):
            raise ZooError(f"fra-eng: {len(src_sentences)} source sentences but {len(tgt_sentences)} targets")
        raw = "\n".join(f"{s}\t{t}" for s, t in zip(src_sentences, tgt_sentences))
        arrays, _, _ = self._build_arrays(raw, self.src_vocab, self.tgt_vocab)
        return arrays

    def _synthetic_text(self) -> str:
        """Made-up pairs of a word-for-word language: 1-5 English words from a small lexicon and a mark; the
        "French" side translates each word through a fixed table (one word in four becomes two) and keeps the mark."""
        g = seeded_generator(self.seed, "fra-eng-synthetic")
        eng = ("i", "you", "he", "she", "we", "they", "go", "run", "eat", "see", "home", "now", "here", "cat", "dog",
               "big", "small", "red", "not", "very")
        fra = ("je", "tu", "il", "elle", "nous", "ils", "va", "cours", "mange", "vois", "maison", "maintenant",
               "ici", "chat", "chien", "grand", "petit", "rouge", "ne pas", "tres")
        marks = (".", "!", "?")
        n = self.num_train + self.num_val + 1
        lengths = torch.randint(1, 6, (n,), generator=g).tolist()
        words = torch.randint(0, len(eng), (sum(lengths),), generator=g).tolist()
        mark_ids = torch.randint(0, len(marks), (n,), generator=g).tolist()
        lines, start = [], 0
        for length, m in zip(lengths, mark_ids):
            ids = words[start:start + length]
            start += length
            lines.append(" ".join(eng[i] for i in ids).capitalize() + marks[m] + "\t" +
                         " ".join(fra[i] for i in ids).capitalize() + " " + marks[m])
        return "\n".join(lines) + "\n"

    # --- what the model and the run need -----------------------------------------------------------------------------
    def _loaded(self, name: str) -> Vocab:
        if name not in self.__dict__:
            self.splits()
        return self.__dict__[name]

    @property
    def src_vocab(self) -> Vocab:
        """The English vocabulary (loads the data on first use)."""
        return self._loaded("_src_vocab")

    @src_vocab.setter
    def src_vocab(self, value: Vocab) -> None:
        self.__dict__["_src_vocab"] = value

    @property
    def tgt_vocab(self) -> Vocab:
        """The French vocabulary (loads the data on first use)."""
        return self._loaded("_tgt_vocab")

    @tgt_vocab.setter
    def tgt_vocab(self, value: Vocab) -> None:
        self.__dict__["_tgt_vocab"] = value

    def vocabs(self) -> dict[str, Vocab]:
        return {"src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab}

    def model_hparams(self) -> dict[str, int]:
        """The vocabulary sizes and the target padding index (which the masked loss skips): a model that takes them
        gets the data's, whatever ``--set`` did to the vocabularies."""
        return {"src_vocab_size": len(self.src_vocab), "tgt_vocab_size": len(self.tgt_vocab),
                "tgt_pad": self.tgt_vocab["<pad>"]}
