"""Where sparselens keeps what it downloads or computes once: ``$SPARSELENS_CACHE``, else ``~/.cache/sparselens``.

Subfolders: ``models/`` (released checkpoints), ``corpus/`` (tokenized corpora), ``means/`` (node
means). Nothing is ever written into the installed package.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SPARSELENS_CACHE"


def cache_dir() -> Path:
    """The cache root (not created here)."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "sparselens")
