"""Load the shipped tokenizer (or any saved one) as a ``transformers`` fast tokenizer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

#: The one special token: BOS, EOS, pad and unk; id 2047 (the last) in the shipped tokenizer.
EOT = "<|endoftext|>"

#: Where the shipped tokenizer lives (rebuilt by ``python -m sparselens.data.build_tokenizer``).
TOKENIZER_DIR = Path(__file__).resolve().parent / "tokenizer"


def load_tokenizer(path: Union[str, os.PathLike, None] = None) -> Any:
    """The shipped 2048-token Python BPE, or a tokenizer saved in ``path``.

    Loads from a saved directory (never an in-memory object), which is what TransformerLens-style
    helpers expect. ``<|endoftext|>`` (id 2047 in the shipped tokenizer) is the BOS, EOS and pad token.

    Args:
        path: a directory written by ``save_pretrained`` (default: ``sparselens/data/tokenizer``).

    Returns:
        A ``transformers.PreTrainedTokenizerFast``; ``len(tok) == 2048`` for the shipped one.

    Example:
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
    return tokenizer


__all__ = ["EOT", "TOKENIZER_DIR", "load_tokenizer"]
