"""Text infrastructure (d2l §9.2): tokenisers and `Vocab`, the book's vocabulary, with a JSON round trip.

`Vocab` reproduces d2l 1.0.3's index order exactly: ``idx_to_token = sorted(set(['<unk>'] + reserved_tokens +
[tokens seen at least min_freq times]))``. The book sorts tokens alphabetically, not by frequency, so indices depend
only on the set of tokens kept; keeping that rule makes a zoo model's embedding rows line up with the reference's.

A trained run stores its vocabularies as JSON (`Vocab.save`, ``vocab.json``) so that it can predict on its own.
Nothing here imports torch: tensors given to `Vocab.to_tokens` are read through ``int()``/``tolist()``.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, overload

from zoo_core.errors import IntegrityError, unknown

UNK = "<unk>"
PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
TOKEN_KINDS = ("char", "word")
_FORMAT = "zoo-vocab"
_VERSION = 1


def tokenize(text: str, token: str = "char") -> list[str]:
    """Split `text` into tokens: ``"char"`` gives every character (spaces included, the book's ``list(text)``, §9.2),
    ``"word"`` the whitespace-separated words (the book's ``text.split()``)."""
    if token == "char":
        return list(text)
    if token == "word":
        return text.split()
    raise unknown("token kind", token, TOKEN_KINDS)


class Vocab:
    """The book's vocabulary (d2l §9.2 ``Vocab``): tokens <-> indices, unknown tokens mapped to ``<unk>``.

    Args:
        tokens: a list of tokens, or a list of lists of tokens (flattened, as the book does).
        min_freq: keep only tokens seen at least this often (reserved tokens and ``<unk>`` are always kept).
        reserved_tokens: tokens always in the vocabulary (``<pad>``, ``<bos>``, ...).

    Attributes:
        idx_to_token: the tokens, sorted (the book's order: ``sorted(set(...))``, not by frequency).
        token_to_idx: the inverse mapping.
        token_freqs: ``(token, count)`` pairs by decreasing count (ties in first-seen order, as in the book); empty
            for a vocabulary read back from JSON (only the tokens are stored).
    """

    def __init__(self, tokens: Sequence[str] | Sequence[Sequence[str]] = (), min_freq: int = 0,
                 reserved_tokens: Sequence[str] = ()) -> None:
        if len(tokens) and isinstance(tokens[0], (list, tuple)):  # the book flattens a 2-D list
            tokens = [t for line in tokens for t in line]
        counter = collections.Counter(tokens)
        self.token_freqs: list[tuple[str, int]] = sorted(counter.items(), key=lambda x: x[1], reverse=True)
        kept = [t for t, freq in self.token_freqs if freq >= min_freq]
        self._set_tokens(sorted(set([UNK, *reserved_tokens, *kept])))

    def _set_tokens(self, idx_to_token: list[str]) -> None:
        self.idx_to_token: list[str] = idx_to_token
        self.token_to_idx: dict[str, int] = {t: i for i, t in enumerate(idx_to_token)}

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __contains__(self, token: object) -> bool:
        return token in self.token_to_idx

    @overload
    def __getitem__(self, tokens: str) -> int: ...
    @overload
    def __getitem__(self, tokens: Sequence[str]) -> list[int]: ...

    def __getitem__(self, tokens: str | Sequence[str]) -> int | list[int]:
        """The index of a token, or the list of indices of a list/tuple of tokens (nested lists map recursively);
        unknown tokens give `unk`."""
        if not isinstance(tokens, (list, tuple)):
            return self.token_to_idx.get(tokens, self.unk)
        return [self[t] for t in tokens]

    def to_tokens(self, indices: Any) -> str | list[str]:
        """The token of an index, or the list of tokens of a sequence of indices (a list, a 1-D tensor or array).

        Unlike the book's, a sequence of length one gives a list of one token (the book indexes the list with the
        sequence and fails); a 0-dim tensor gives a token.
        """
        if hasattr(indices, "tolist"):  # tensors and arrays, without importing torch
            indices = indices.tolist()
        if isinstance(indices, Iterable):
            return [self.idx_to_token[int(i)] for i in indices]
        return self.idx_to_token[int(indices)]

    @property
    def unk(self) -> int:
        """The index of ``<unk>``."""
        return self.token_to_idx[UNK]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.idx_to_token == other.idx_to_token

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self.idx_to_token[:8])
        return f"Vocab({len(self)} tokens: {head}{', ...' if len(self) > 8 else ''})"

    # --- JSON round trip --------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON value that `from_json` turns back into an equal vocabulary (the tokens, in index order)."""
        return {"format": _FORMAT, "version": _VERSION, "idx_to_token": list(self.idx_to_token)}

    @classmethod
    def from_json(cls, value: Any, source: str = "vocabulary") -> Vocab:
        """The vocabulary `to_json` described; `IntegrityError` (naming `source`) if `value` is not one."""
        if not isinstance(value, dict) or value.get("format", _FORMAT) != _FORMAT:
            raise IntegrityError(f"{source}: not a zoo vocabulary (expected a JSON object with 'idx_to_token')")
        tokens = value.get("idx_to_token")
        if (not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens)
                or len(set(tokens)) != len(tokens) or UNK not in tokens):
            raise IntegrityError(f"{source}: 'idx_to_token' must be a list of distinct strings holding {UNK!r}")
        vocab = cls.__new__(cls)
        vocab.token_freqs = []
        vocab._set_tokens(list(tokens))
        return vocab

    def save(self, path: str | os.PathLike) -> Path:
        """Write the vocabulary as JSON to `path` atomically (never a half-written file); returns the path."""
        from zoo_core.artifacts import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        """Read a vocabulary `save` wrote; `IntegrityError` if the file is missing or is not one."""
        try:
            value = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IntegrityError(f"vocabulary file {path} is missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IntegrityError(f"cannot read vocabulary {path}: {' '.join(str(e).split())}") from None
        return cls.from_json(value, source=str(path))
