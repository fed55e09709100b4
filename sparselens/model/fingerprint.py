"""A short hash of a model's architecture and weights, so that circuits and caches know their model."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

#: Config fields that do not change what the model computes, left out of the hash.
IGNORED_CONFIG_FIELDS = ("device", "seed", "tokenizer_name")


def model_fingerprint(model: "HookedSparseTransformer") -> str:
    """A short hash of the architecture and weights, so a circuit knows which model it belongs to."""
    h = hashlib.sha256(json.dumps(
        {k: v for k, v in model.cfg.to_dict().items() if k not in IGNORED_CONFIG_FIELDS}, sort_keys=True
    ).encode())
    for name, p in sorted(model.state_dict().items()):
        if p.is_floating_point():
            h.update(f"{name}:{float(p.double().abs().sum()):.6e}".encode())
    return h.hexdigest()[:16]


__all__ = ["model_fingerprint"]
