"""Errors a user can act on.

Everything the zoo raises for a user's mistake (an unknown model, a bad option, missing data, a corrupt file) is a
`ZooError`: the CLI prints its message as one line on stderr and exits non-zero, without a traceback (`--debug`
shows it). Anything else that escapes is a bug and is reported as one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZooError(Exception):
    """A problem the user can fix; its message is the whole explanation, on one line."""

    exit_code: int = 1


class UnknownNameError(ZooError, LookupError):
    """A model, dataset, preset or hyper-parameter name that is not known."""


class DataNotFoundError(ZooError, FileNotFoundError):
    """A dataset's files are not in any data folder and could not be downloaded."""


class IntegrityError(ZooError):
    """A file does not match its recorded checksum, or cannot be parsed: it is never used silently."""


class NonFiniteLossError(ZooError, ArithmeticError):
    """Training produced a NaN or infinite loss."""


class NoSpaceError(ZooError, OSError):
    """A file could not be written for lack of space (or quota) on its device."""


class WorkerLostError(ZooError):
    """Distributed training stopped because another process of the job died or stopped answering."""


class TrainingInterrupted(ZooError):
    """Training was stopped by the user (Ctrl-C) after its checkpoint was saved."""

    exit_code = 130


def unknown(kind: str, name: str, known: Iterable[str], hint: str = "", list_known: bool = True) -> UnknownNameError:
    """An `UnknownNameError` that suggests the closest known names ("did you mean ...?"), or lists a few known ones
    when none is close (``list_known=False`` where the `hint` lists them already)."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    # prefixes and substrings catch what edit distance misses ("res" -> "resnet18")
    close = (close + [k for k in known if name and (k.startswith(name) or name in k) and k not in close])[:3]
    message = f"unknown {kind} {name!r}"
    if close:
        message += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    elif list_known and known and len(known) <= 12:
        message += "; known: " + ", ".join(known)
    if hint:
        message += f" ({hint})"
    return UnknownNameError(message)
