"""ActivationCache whose unknown keys say what went wrong (a typo, or a hook not cached) and suggest the closest."""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens import ActivationCache

from sparselens.errors import UnknownNameError


class SparseActivationCache(ActivationCache):
    """TransformerLens's ActivationCache; a key it cannot find raises :class:`UnknownNameError`."""

    def __getitem__(self, key: Any) -> torch.Tensor:
        try:
            return super().__getitem__(key)
        except KeyError:
            name = key if isinstance(key, str) else repr(key)
            hooks = getattr(self.model, "hook_dict", {})
            if isinstance(key, str) and key in hooks:
                raise UnknownNameError("cached activation", name, list(self.cache_dict),
                                       note=f"{key!r} is a hook point that this run did not cache (names_filter)") from None
            raise UnknownNameError("cached activation", name, list(self.cache_dict) or list(hooks)) from None
