"""A TransformerLens HookPoint whose forward hooks are checked for shape.

A hook that returns a tensor of the wrong shape would otherwise fail deep inside the next matmul;
here the error names the hook and both shapes.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from transformer_lens.hook_points import HookPoint


class CheckedHookPoint(HookPoint):
    """HookPoint that rejects forward hooks returning a tensor of a different shape."""

    @property
    def has_forward_hooks(self) -> bool:
        """Whether any forward hook is attached (a caller that must honour edits then takes the slow path)."""
        return bool(self._forward_hooks)

    @property
    def is_hooked(self) -> bool:
        """Whether any forward or backward hook is attached: the activation must then exist as a tensor."""
        return bool(self._forward_hooks or self._backward_hooks)

    def add_hook(self, hook: Callable, dir: Literal["fwd", "bwd"] = "fwd", *args: Any, **kwargs: Any):
        if dir == "fwd":
            hook = _shape_checked(hook)
        return super().add_hook(hook, dir, *args, **kwargs)


def _shape_checked(hook: Callable) -> Callable:
    def checked(activation: torch.Tensor, hook: HookPoint) -> Any:
        result = inner(activation, hook=hook)
        if isinstance(result, torch.Tensor) and result.shape != activation.shape:
            raise ValueError(
                f"hook {getattr(inner, '__name__', inner)!r} at {hook.name!r} returned shape "
                f"{tuple(result.shape)} but the activation has shape {tuple(activation.shape)}; "
                "a hook must return a tensor of the same shape (or None to leave it unchanged)"
            )
        return result

    inner = hook
    # never repr(hook): a partial's repr prints every tensor it carries, each time a hook is attached
    name = getattr(hook, "__name__", None) or getattr(getattr(hook, "func", None), "__name__", None)
    checked.__name__ = str(name or type(hook).__name__)
    checked.__wrapped__ = hook  # type: ignore[attr-defined]
    return checked
