"""Error helpers: every bad name gets the closest valid one suggested."""

from __future__ import annotations

import difflib
from typing import Iterable


def closest_hint(name: str, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest valid name, or ``""`` if nothing is close."""
    matches = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.5)
    return f"; did you mean {matches[0]!r}?" if matches else ""


class SparselensError(Exception):
    """Base of the errors sparselens raises on purpose: bad input, with what to do about it.

    The command line prints their message without a traceback (``SPARSELENS_DEBUG=1`` shows it).
    """


class UnknownNameError(SparselensError, KeyError):
    """An unknown hook, site, node, check or cached name. Its message names the closest valid name."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], note: str = ""):
        valid = list(valid)
        self.message = f"unknown {kind} {name!r}" + (f" ({note})" if note else "") + closest_hint(name, valid)
        if not closest_hint(name, valid) and valid:
            preview = ", ".join(repr(v) for v in valid[:6])
            self.message += f"; valid names look like {preview}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message


class InputError(SparselensError, ValueError):
    """A bad argument, config, file or data: the message says which and what to do."""


class CheckpointError(SparselensError, RuntimeError):
    """A checkpoint that is missing, truncated, corrupt or for a different architecture."""
