"""Weight top-k with a per-slice floor in Triton, by threshold selection with no host sync.

Semantics are :func:`sparselens.kernels.reference.weight_topk_mask`. Steps, all on the device:

1. **Floor** (one program per slice): each entry gets the 64-bit key
   ``(bits(|w|) << 32) | (2**32 - 1 - index_in_slice)``, so keys are distinct and order like
   "larger magnitude first, then lower index". ``floor`` max-reductions over keys below the previous
   maximum find the ``floor``-th largest key; entries at or above it are protected.
2. **Radix select** of the ``n_fill``-th largest magnitude among unprotected entries: four passes
   over 8-bit digits of ``bits(|w|)``, each a block-wise histogram (atomic adds of integer counts,
   so the result does not depend on order) and a one-program step that picks the digit and updates
   ``(prefix, remaining)`` in device memory. The result is the exact threshold ``T`` and the number
   ``r`` of entries equal to ``T`` still to take.
3. **Ties**: per-block counts of unprotected entries equal to ``T``, an exclusive cumulative sum
   across blocks (torch, on the device), and a final pass that keeps ``protected | |w| > T`` plus
   the first ``r`` tied entries in row-major order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

from sparselens.kernels.triton_common import INTERPRETING, check_device


@triton.jit
def _floor_key(slice_ptr, idx, stride, valid, low_max):
    """Sort key of each entry of a slice: |w|'s fp32 bits above, then the inverted index (lowest wins ties)."""
    w = tl.load(slice_ptr + idx * stride, mask=valid, other=0.0)
    bits = tl.abs(w.to(tl.float32)).to(tl.int32, bitcast=True).to(tl.int64)
    return (bits << 32) | (low_max - idx.to(tl.int64))


@triton.jit
def _floor_kernel(
    w_ptr, prot_ptr, slice_len, stride_ws, stride_we, stride_ps, stride_pe,
    FLOOR: tl.constexpr, BLOCK: tl.constexpr,
):
    s = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    low_max = tl.full((), 0xFFFFFFFF, tl.int64)
    prev = tl.full((), 0x7FFFFFFFFFFFFFFF, tl.int64)
    for _ in tl.static_range(FLOOR):
        best = tl.full((), -1, tl.int64)
        for start in range(0, slice_len, BLOCK):
            idx = start + offs
            valid = idx < slice_len
            key = _floor_key(w_ptr + s * stride_ws, idx, stride_we, valid, low_max)
            key = tl.where(valid & (key < prev), key, -1)
            best = tl.maximum(best, tl.max(key, axis=0))
        prev = best
    for start in range(0, slice_len, BLOCK):
        idx = start + offs
        valid = idx < slice_len
        key = _floor_key(w_ptr + s * stride_ws, idx, stride_we, valid, low_max)
        tl.store(prot_ptr + s * stride_ps + idx * stride_pe, (key >= prev).to(tl.int8), mask=valid)


@triton.jit
def _load_block(w_ptr, prot_ptr, n_cols, numel, stride_wr, stride_wc, pid, BLOCK: tl.constexpr):
    """Magnitude bits and unprotected flag of the flat (row-major) block ``pid``."""
    flat = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = flat < numel
    r = flat // n_cols
    c = flat % n_cols
    w = tl.load(w_ptr + r * stride_wr + c * stride_wc, mask=valid, other=0.0)
    bits = tl.abs(w.to(tl.float32)).to(tl.int32, bitcast=True)
    prot = tl.load(prot_ptr + flat, mask=valid, other=1)
    return flat, valid, bits, valid & (prot == 0)


@triton.jit
def _histogram_kernel(
    w_ptr, prot_ptr, state_ptr, hist_ptr, n_cols, numel, stride_wr, stride_wc,
    SHIFT: tl.constexpr, HIGH: tl.constexpr, BLOCK: tl.constexpr,
):
    _, _, bits, free = _load_block(w_ptr, prot_ptr, n_cols, numel, stride_wr, stride_wc, tl.program_id(0), BLOCK)
    prefix = tl.load(state_ptr)
    match = free & ((bits & HIGH) == (prefix & HIGH))  # HIGH: the bits fixed by earlier passes
    digit = (bits >> SHIFT) & 0xFF
    tl.atomic_add(hist_ptr + tl.arange(0, 256), tl.histogram(digit, 256, mask=match))


@triton.jit
def _select_digit_kernel(state_ptr, hist_ptr, SHIFT: tl.constexpr):
    """state = [prefix, remaining]: choose the digit holding the remaining-th largest entry."""
    prefix = tl.load(state_ptr)
    remaining = tl.load(state_ptr + 1)
    digits = tl.arange(0, 256)
    hist = tl.load(hist_ptr + digits)
    n_above = tl.sum(hist, axis=0) - tl.cumsum(hist, axis=0)  # entries in higher digits
    chosen = (n_above < remaining) & (n_above + hist >= remaining)
    digit = tl.sum(tl.where(chosen, digits, 0), axis=0)
    tl.store(state_ptr, prefix | (digit << SHIFT))
    tl.store(state_ptr + 1, remaining - tl.sum(tl.where(chosen, n_above, 0), axis=0))


@triton.jit
def _tie_count_kernel(w_ptr, prot_ptr, state_ptr, counts_ptr, n_cols, numel, stride_wr, stride_wc, BLOCK: tl.constexpr):
    _, _, bits, free = _load_block(w_ptr, prot_ptr, n_cols, numel, stride_wr, stride_wc, tl.program_id(0), BLOCK)
    tied = free & (bits == tl.load(state_ptr))
    tl.store(counts_ptr + tl.program_id(0), tl.sum(tied.to(tl.int32), axis=0))


@triton.jit
def _final_mask_kernel(
    w_ptr, prot_ptr, state_ptr, ties_before_ptr, out_ptr, n_cols, numel, stride_wr, stride_wc,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    flat, valid, bits, free = _load_block(w_ptr, prot_ptr, n_cols, numel, stride_wr, stride_wc, pid, BLOCK)
    threshold = tl.load(state_ptr)
    remaining = tl.load(state_ptr + 1)
    tied = free & (bits == threshold)
    rank = tl.load(ties_before_ptr + pid) + tl.cumsum(tied.to(tl.int32), axis=0)  # 1-based among ties
    keep = (valid & ~free) | (free & (bits > threshold)) | (tied & (rank <= remaining))
    tl.store(out_ptr + flat, keep.to(tl.int8), mask=valid)


def weight_topk_mask(w: Float[Tensor, "rows cols"], k: int, floor: int, floor_dim: int) -> torch.Tensor:
    """Bool mask ``[rows, cols]``; arguments are assumed checked by the dispatcher."""
    check_device(w)
    n_rows, n_cols = w.shape
    numel = w.numel()
    if numel >= 2**31:
        raise ValueError(f"weight_topk_mask: the Triton kernel takes fewer than 2**31 entries, got {numel}")
    prot = torch.empty((n_rows, n_cols), dtype=torch.int8, device=w.device)
    n_slices, slice_len = (n_rows, n_cols) if floor_dim == 0 else (n_cols, n_rows)
    slice_floor = min(floor, slice_len)
    if numel == 0:
        return prot.view(torch.bool)
    ws, we = (w.stride(0), w.stride(1)) if floor_dim == 0 else (w.stride(1), w.stride(0))
    ps, pe = (n_cols, 1) if floor_dim == 0 else (1, n_cols)
    slice_block = min(triton.next_power_of_2(slice_len), 64 if INTERPRETING else 1024)
    _floor_kernel[(n_slices,)](w, prot, slice_len, ws, we, ps, pe, FLOOR=slice_floor, BLOCK=slice_block)
    n_fill = max(0, k - n_slices * slice_floor)  # known from shapes: no host sync
    if n_fill == 0:
        return prot.view(torch.bool)

    block = 256 if INTERPRETING else 4096
    n_blocks = triton.cdiv(numel, block)
    state = torch.tensor([0, n_fill], dtype=torch.int32, device=w.device)  # [prefix, remaining]
    hist = torch.zeros((4, 256), dtype=torch.int32, device=w.device)
    args = (n_cols, numel, w.stride(0), w.stride(1))
    for i, shift in enumerate((24, 16, 8, 0)):
        high = -(1 << (shift + 8)) if shift < 24 else 0  # int32 mask of bits above this digit
        _histogram_kernel[(n_blocks,)](w, prot, state, hist[i], *args, SHIFT=shift, HIGH=high, BLOCK=block)
        _select_digit_kernel[(1,)](state, hist[i], SHIFT=shift)
    counts = torch.empty(n_blocks, dtype=torch.int32, device=w.device)
    _tie_count_kernel[(n_blocks,)](w, prot, state, counts, *args, BLOCK=block)
    ties_before = (counts.cumsum(0, dtype=torch.int32) - counts).contiguous()
    out = torch.empty((n_rows, n_cols), dtype=torch.int8, device=w.device)
    _final_mask_kernel[(n_blocks,)](w, prot, state, ties_before, out, *args, BLOCK=block)
    return out.view(torch.bool)
