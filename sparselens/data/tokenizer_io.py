"""Load the shipped tokenizer (or any saved one) as a ``transformers`` fast tokenizer, and name tokenizers.

A tokenizer's *name* says which vocabulary and pre-tokenizer it is, so that a model refuses one it
was not trained with (``HookedSparseTransformer.set_tokenizer`` compares it with
``cfg.tokenizer_name``). The name is stored in ``tokenizer_config.json`` under
:data:`NAME_KEY` and so travels with ``save_pretrained``; the shipped tokenizer, saved before names
existed, is also recognised by its vocabulary.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

#: The one special token: BOS, EOS, pad and unk; id 2047 (the last) in the shipped tokenizer.
EOT = "<|endoftext|>"

#: Where the shipped tokenizer lives (rebuilt by ``python -m sparselens.data.build_tokenizer``).
TOKENIZER_DIR = Path(__file__).resolve().parent / "tokenizer"

#: The name of the shipped 2048-token Python BPE (recorded as ``cfg.tokenizer_name`` of our models).
SHIPPED_TOKENIZER_NAME = "sparselens_python_2k"

#: The ``tokenizer_config.json`` key (a ``transformers`` init kwarg) that holds a tokenizer's name.
NAME_KEY = "sparselens_tokenizer_name"


def set_tokenizer_name(tokenizer: Any, name: str) -> Any:
    """Record ``name`` on ``tokenizer`` (saved to ``tokenizer_config.json`` by ``save_pretrained``)."""
    tokenizer.init_kwargs[NAME_KEY] = name
    return tokenizer


def _vocab_digest(vocab: dict[str, int]) -> str:
    return hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _shipped_vocab() -> tuple[int, str]:
    """(size, digest) of the shipped tokenizer's vocabulary, read from its tokenizer.json."""
    data = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())
    vocab = dict(data["model"]["vocab"])
    vocab.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
    return len(vocab), _vocab_digest(vocab)


def tokenizer_name(tokenizer: Any) -> Optional[str]:
    """The name of a tokenizer: the one recorded on it, or the shipped tokenizer's name when its
    vocabulary is the shipped one (tokenizers saved before names were recorded); else None."""
    recorded = (getattr(tokenizer, "init_kwargs", None) or {}).get(NAME_KEY)
    if recorded:
        return str(recorded)
    try:
        size, digest = _shipped_vocab()
    except (OSError, ValueError, KeyError):  # a checkout without the shipped tokenizer
        return None
    if len(tokenizer) == size and hasattr(tokenizer, "get_vocab") and _vocab_digest(tokenizer.get_vocab()) == digest:
        return SHIPPED_TOKENIZER_NAME
    return None


def check_tokenizer_name(tokenizer: Any, expected: Optional[str]) -> Optional[str]:
    """The name to record for a model whose config says ``expected`` and that gets ``tokenizer``.

    Raises:
        ValueError: both names are known and differ (the message names both).
    """
    name = tokenizer_name(tokenizer)
    if expected is not None and name is not None and name != expected:
        raise ValueError(
            f"this tokenizer is {name!r} but the model was trained with {expected!r} "
            f"(cfg.tokenizer_name): token ids would mean different strings, so every loss, mean and "
            f"circuit would be meaningless. Attach the {expected!r} tokenizer (models loaded with "
            "from_pretrained come with theirs)"
        )
    return expected if expected is not None else name


def load_tokenizer(path: Union[str, os.PathLike, None] = None) -> Any:
    """The shipped 2048-token Python BPE, or a tokenizer saved in ``path``.

    Loads from a saved directory (never an in-memory object), which is what TransformerLens-style
    helpers expect. ``<|endoftext|>`` (id 2047 in the shipped tokenizer) is the BOS, EOS and pad token.

    Args:
        path: a directory written by ``save_pretrained`` (default: ``sparselens/data/tokenizer``).

    Returns:
        A ``transformers.PreTrainedTokenizerFast``; ``len(tok) == 2048`` for the shipped one.

    Examples:
        >>> tok = load_tokenizer()
        >>> tok.convert_ids_to_tokens(tok.encode("for i in range(n):"))
        ['for', 'Ġi', 'Ġin', 'Ġrange', '(', 'n', '):']
    """
    from transformers import PreTrainedTokenizerFast

    folder = Path(path) if path is not None else TOKENIZER_DIR
    if not (folder / "tokenizer.json").is_file():
        hint = (
            "rebuild it with `python -m sparselens.data.build_tokenizer`"
            if path is None
            else "pass a directory written by tokenizer.save_pretrained(...)"
        )
        raise FileNotFoundError(f"no tokenizer.json in {str(folder)!r}; {hint}")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    name = tokenizer_name(tokenizer)
    if name is not None:
        set_tokenizer_name(tokenizer, name)  # so that a model saved with it records the name
    return tokenizer


__all__ = [
    "EOT", "NAME_KEY", "SHIPPED_TOKENIZER_NAME", "TOKENIZER_DIR", "check_tokenizer_name", "load_tokenizer",
    "set_tokenizer_name", "tokenizer_name",
]
