"""Torch reference implementations of the hot ops.

These define the semantics. A Triton kernel for an op must match its reference: exactly for
selections (AbsTopK keeps the same entries), within stated tolerances for arithmetic.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor


def abstopk_mask(x: Float[Tensor, "... d"], k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` entries of largest ``|x|`` along the last dim.

    Ties are broken deterministically: among entries of equal magnitude the lowest index is kept.
    This is what makes the Triton kernel and the reference select identical entries.
    """
    width = x.shape[-1]
    if not 0 <= k <= width:
        raise ValueError(f"abstopk: k={k} must be between 0 and the last dim ({width})")
    if k == width:
        return torch.ones_like(x, dtype=torch.bool)
    if k == 0:
        return torch.zeros_like(x, dtype=torch.bool)
    mag = x.detach().abs()
    threshold = mag.topk(k, dim=-1, sorted=True).values[..., -1:]  # the k-th largest magnitude
    above = mag > threshold
    tied = mag == threshold
    n_tied_needed = k - above.sum(dim=-1, keepdim=True)
    return above | (tied & (tied.cumsum(dim=-1) <= n_tied_needed))


def abstopk(x: Float[Tensor, "... d"], k: int) -> Float[Tensor, "... d"]:
    """Keep the ``k`` largest-magnitude entries of each row of ``x`` and zero the rest.

    The gradient flows to the kept entries only (it reuses the forward's selection).
    """
    if k == x.shape[-1]:
        return x
    return torch.where(abstopk_mask(x, k), x, torch.zeros((), dtype=x.dtype, device=x.device))


def rms_scale(x: Float[Tensor, "... d"], eps: float) -> Float[Tensor, "... 1"]:
    """The RMSNorm denominator ``sqrt(mean(x**2) + eps)``, computed in fp32 at least."""
    x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return (x32.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt().to(x.dtype)


def rms_norm_frozen(
    x: Float[Tensor, "... d"], weight: Float[Tensor, " d"], scale: Float[Tensor, "... 1"]
) -> Float[Tensor, "... d"]:
    """RMSNorm with a given scale: ``x / scale * weight`` (the frozen-norm variant)."""
    return x / scale * weight


def rms_norm(
    x: Float[Tensor, "... d"], weight: Float[Tensor, " d"], eps: float
) -> tuple[Float[Tensor, "... d"], Float[Tensor, "... 1"]]:
    """RMSNorm returning ``(x / scale * weight, scale)`` so that callers can freeze the scale."""
    scale = rms_scale(x, eps)
    return rms_norm_frozen(x, weight, scale), scale


def masked_ablate(
    x: Float[Tensor, "... n"], mask: Float[Tensor, " n"], replacement: Optional[Tensor]
) -> Float[Tensor, "... n"]:
    """``mask * x + (1 - mask) * replacement``; ``replacement=None`` means zero.

    With ``mask`` all ones the result equals ``x`` exactly (``1*x + 0*r`` is ``x`` for finite ``r``),
    which is the invariant the pruning tests rely on. ``mask`` may be float (with gradient, for
    learning masks) or bool.
    """
    mask = mask.to(x.dtype)
    if replacement is None:
        return x * mask
    return mask * x + (1 - mask) * replacement
