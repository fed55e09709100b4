"""Torch reference implementations of the hot ops.

These define the semantics. A Triton kernel for an op must match its reference: exactly for
selections (AbsTopK keeps the same entries), within stated tolerances for arithmetic.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

#: float dtype -> (the integer dtype of its width, the bits of +inf)
INT_VIEWS = {
    torch.float16: (torch.int16, 0x7C00),
    torch.bfloat16: (torch.int16, 0x7F80),
    torch.float32: (torch.int32, 0x7F800000),
    torch.float64: (torch.int64, 0x7FF0000000000000),
}


def magnitude_key(x: Float[Tensor, "..."]) -> Tensor:
    """Integers ordered like ``|x|``, with every NaN one above +inf: ``x``'s shape, int16/32/64.

    For IEEE floats the bit pattern with the sign bit cleared, read as an integer, orders like the
    magnitude (``-0.0`` and ``0.0`` tie). NaNs of any sign and payload get the same key, above
    +inf's: a NaN counts as the largest magnitude, as in ``torch.topk``, and NaNs tie.

    Raises:
        ValueError: ``x`` is not float16, bfloat16, float32 or float64.
    """
    if x.dtype not in INT_VIEWS:
        raise ValueError(f"magnitudes of {x.dtype} are not supported; use float16, bfloat16, float32 or float64")
    int_dtype, inf_bits = INT_VIEWS[x.dtype]
    return (x.view(int_dtype) & torch.iinfo(int_dtype).max).clamp_max(inf_bits + 1)


def abstopk_mask(x: Float[Tensor, "... d"], k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` entries of largest ``|x|`` along the last dim.

    Ties are broken deterministically: among entries of equal magnitude the lowest index is kept.
    This is what makes every backend select identical entries. NaN counts as the largest
    magnitude (above +inf; NaNs tie with each other, lowest index first), as in ``torch.topk``.
    """
    width = x.shape[-1]
    if not 0 <= k <= width:
        raise ValueError(f"abstopk: k={k} must be between 0 and the last dim ({width})")
    if k == width:
        return torch.ones_like(x, dtype=torch.bool)
    if k == 0:
        return torch.zeros_like(x, dtype=torch.bool)
    return _topk_mask(magnitude_key(x.detach()), k)


def _topk_mask(score: Float[Tensor, "... d"], k: int) -> torch.Tensor:
    """Mask of the ``k`` largest ``score`` entries along the last dim, lowest index first on ties.

    ``score``: integers (:func:`magnitude_key`) or NaN-free floats; ``0 < k <= d``. On the CPU,
    where branching on data waits for nothing, torch.topk's own choice is kept in every row where
    no entry equal to the k-th largest was left out (so no tie could be broken differently), and
    only the other rows go through the tie rule; elsewhere the branch-free
    :func:`_topk_mask_branch_free` runs (no host synchronisation). Both select the same entries.
    """
    if score.device.type != "cpu":
        return _topk_mask_branch_free(score, k)
    rows = score.reshape(-1, score.shape[-1])
    values, index = rows.topk(k, dim=-1, sorted=False)
    threshold = values.amin(dim=-1, keepdim=True)
    mask = torch.zeros_like(rows, dtype=torch.bool).scatter_(-1, index, True)
    ambiguous = ((rows >= threshold).sum(dim=-1) > k).nonzero().squeeze(1)
    if ambiguous.numel():
        mask[ambiguous] = _topk_mask_branch_free(rows[ambiguous], k)
    return mask.view(score.shape)


def _topk_mask_branch_free(score: Float[Tensor, "... d"], k: int) -> torch.Tensor:
    """The tie rule of :func:`_topk_mask` in fixed-shape tensor ops (no host synchronisation)."""
    # the k-th largest score; unsorted top-k plus a min is faster than a sorted top-k on CPU
    threshold = score.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    above = score > threshold
    tied = score == threshold
    n_tied_needed = k - above.sum(dim=-1, keepdim=True)
    return above | (tied & (tied.cumsum(dim=-1) <= n_tied_needed))


def abstopk(x: Float[Tensor, "... d"], k: int) -> Float[Tensor, "... d"]:
    """Keep the ``k`` largest-magnitude entries of each row of ``x`` and zero the rest.

    The selection is :func:`abstopk_mask` (NaN counts as the largest magnitude). The gradient flows
    to the kept entries only (it reuses the forward's selection).
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


def weight_topk_mask(w: Float[Tensor, "rows cols"], k: int, floor: int = 4, floor_dim: int = 0) -> torch.Tensor:
    """Boolean mask of the entries a weight-sparse matrix keeps (METHOD.md section 2).

    Selection, in this order:

    1. **Floor.** Every slice along ``floor_dim`` protects its ``min(floor, slice_len)`` entries of
       largest ``|w|``. ``floor_dim=0`` means every row ``w[i, :]`` (for an ``nn.Linear`` weight
       ``[out, in]``: every output neuron/channel); ``floor_dim=1`` means every column ``w[:, j]``.
       Among equal magnitudes the lowest index along the slice wins.
    2. **Top-k.** The protected entries count towards ``k``: the remaining
       ``max(0, k - n_protected)`` entries are the largest ``|w|`` among the unprotected ones, ties
       broken by the lowest row-major flat index ``i * cols + j``. If ``k`` is at most the protected
       count, the protected entries alone are kept (so the mask may hold more than ``k`` entries).

    The result is a pure function of ``|w|`` (deterministic, no randomness). There is no host
    synchronisation: the protected count is ``n_slices * min(floor, slice_len)``, known from shapes,
    and every data-dependent quantity stays on the device. NaN counts as the largest magnitude
    (:func:`magnitude_key`) here and on the CPU kernel; the Triton kernel's NaN order is unspecified.

    Args:
        w: the weight matrix ``[rows, cols]`` (any float dtype, any strides).
        k: entries to keep, ``0 <= k <= rows * cols``.
        floor: entries protected per slice (``>= 0``).
        floor_dim: 0 to protect per row, 1 per column.

    Returns:
        Bool tensor ``[rows, cols]`` on ``w``'s device.

    Examples:
        >>> w = torch.tensor([[3.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
        >>> weight_topk_mask(w, k=3, floor=1).int().tolist()
        [[1, 1, 0], [0, 0, 1]]
    """
    _check_weight_topk_args(w, k, floor, floor_dim)
    slices = w.detach() if floor_dim == 0 else w.detach().T  # [n_slices, slice_len]
    slice_floor = min(floor, slices.shape[1])
    protected = abstopk_mask(slices, slice_floor)
    if floor_dim == 1:
        protected = protected.T
    n_protected = slices.shape[0] * slice_floor
    n_fill = max(0, k - n_protected)
    if n_fill == 0:
        return protected
    if n_fill == w.numel() - n_protected:  # every unprotected entry is kept
        return torch.ones_like(protected)
    # Unprotected entries compete on |w| (its key); protected ones get -1 so they never win (keys
    # are >= 0, and n_fill never exceeds the number of unprotected entries).
    mag = magnitude_key(w.detach())
    score = torch.where(protected, torch.full((), -1, dtype=mag.dtype, device=mag.device), mag)
    return protected | _topk_mask(score.reshape(-1), n_fill).view_as(mag)


def _check_weight_topk_args(w: Tensor, k: int, floor: int, floor_dim: int) -> None:
    """Raise ``ValueError`` naming the problem for arguments :func:`weight_topk_mask` cannot take."""
    if w.dim() != 2:
        raise ValueError(f"weight_topk_mask: w must be a 2-D weight matrix, got shape {tuple(w.shape)}")
    if not w.is_floating_point():
        raise ValueError(f"weight_topk_mask: w must be a float tensor, got {w.dtype}")
    if floor_dim not in (0, 1):
        raise ValueError(f"weight_topk_mask: floor_dim must be 0 (rows) or 1 (columns), got {floor_dim}")
    if floor < 0:
        raise ValueError(f"weight_topk_mask: floor must be >= 0, got {floor}")
    if not 0 <= k <= w.numel():
        raise ValueError(f"weight_topk_mask: k={k} must be between 0 and w.numel() ({w.numel()})")
