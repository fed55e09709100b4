"""A short hash of a model's architecture and weights, so that circuits and caches know their model.

Any model with a ``cfg`` (a ``to_dict()``, else its attributes) and a ``state_dict()`` has one: a
:class:`~sparselens.HookedSparseTransformer`, or a TransformerLens ``TransformerBridge`` on the
dense side of bridges. Config values JSON cannot write (a TransformerBridge's ``torch.dtype``) are
hashed as their ``str``; every other value is hashed as JSON, as it always was, so the fingerprints
of saved circuits and shipped means stay valid.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

#: Config fields that do not change what the model computes, left out of the hash.
IGNORED_CONFIG_FIELDS = ("device", "seed", "tokenizer_name")

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _config_value(value: Any) -> str:
    """A config value JSON cannot write, as text: its ``str``, with any memory address dropped (it changes every run)."""
    return _ADDRESS.sub("", str(value))


def model_fingerprint(model: Any) -> str:
    """A short hash of the architecture (``model.cfg``) and weights (``model.state_dict()``).

    A circuit, cached means or bridges record it to recognise their model later.
    """
    to_dict = getattr(model.cfg, "to_dict", None)
    config = to_dict() if callable(to_dict) else dict(vars(model.cfg))
    h = hashlib.sha256(json.dumps(
        {k: v for k, v in config.items() if k not in IGNORED_CONFIG_FIELDS}, sort_keys=True, default=_config_value
    ).encode())
    for name, p in sorted(model.state_dict().items()):
        if p.is_floating_point():
            h.update(f"{name}:{float(p.double().abs().sum()):.6e}".encode())
    return h.hexdigest()[:16]


__all__ = ["model_fingerprint"]
