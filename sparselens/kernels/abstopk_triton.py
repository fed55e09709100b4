"""AbsTopK in Triton: one program per row, threshold by bisection on the magnitude's bits.

For a row ``x[r, :]`` the kernel finds the ``k``-th largest ``|x|`` exactly, by bisecting on the
bit pattern of ``|x|`` upcast to fp32 (for non-negative floats the bit pattern orders like the
value). Entries above the threshold are kept; among entries equal to it the lowest indices are kept
until ``k`` are chosen (a prefix count along the row), which is the reference's tie-break. Every
NaN gets one key just above +inf's, so NaN counts as the largest magnitude and NaNs tie, as in the
reference (:func:`sparselens.kernels.reference.magnitude_key`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from jaxtyping import Bool, Float
from torch import Tensor

from sparselens.kernels.triton_common import as_rows, check_device, num_warps_for, row_block

# Low fp32 bits that are always zero after upcasting from each dtype, so bisection can skip them.
_ZERO_LOW_BITS = {torch.float32: 0, torch.bfloat16: 16, torch.float16: 13}


@triton.jit
def _abstopk_fwd_kernel(
    x_ptr, out_ptr, keep_ptr, n_cols, stride_xr, stride_xc, k,
    LOW_BIT: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    valid = cols < n_cols
    x = tl.load(x_ptr + row * stride_xr + cols * stride_xc, mask=valid, other=0.0)
    bits = tl.abs(x.to(tl.float32)).to(tl.int32, bitcast=True)
    bits = tl.minimum(bits, 0x7F800000 + (1 << LOW_BIT))  # every NaN: the next key above +inf the bisection sees
    bits = tl.where(valid, bits, -1)  # padding ranks below every magnitude
    # Largest t with count(bits >= t) >= k: the k-th largest magnitude's bit pattern.
    t = tl.full((), 0, tl.int32)
    for b in tl.static_range(30, LOW_BIT - 1, -1):
        cand = t | (1 << b)
        n_ge = tl.sum((bits >= cand).to(tl.int32), axis=0)
        t = tl.where(n_ge >= k, cand, t)
    above = bits > t
    tied = bits == t
    n_tied_needed = k - tl.sum(above.to(tl.int32), axis=0)
    keep = above | (tied & (tl.cumsum(tied.to(tl.int32), axis=0) <= n_tied_needed))
    tl.store(out_ptr + row * n_cols + cols, tl.where(keep, x, tl.zeros_like(x)), mask=valid)
    tl.store(keep_ptr + row * n_cols + cols, keep.to(tl.int8), mask=valid)


def abstopk_forward(x: Float[Tensor, "... d"], k: int) -> tuple[Float[Tensor, "... d"], torch.Tensor]:
    """Run the kernel: ``(out, keep)`` with ``keep`` the bool selection mask, both shaped like ``x``.

    Arguments are assumed valid (the dispatcher checks them); ``x`` may be non-contiguous.
    """
    check_device(x)
    if x.dtype not in _ZERO_LOW_BITS:
        raise ValueError(f"abstopk: the Triton kernel takes float32/bfloat16/float16, got {x.dtype}")
    rows = as_rows(x)
    n_rows, n_cols = rows.shape
    out = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    keep = torch.empty((n_rows, n_cols), dtype=torch.int8, device=x.device)
    if rows.numel() > 0:
        block = row_block(n_cols)
        _abstopk_fwd_kernel[(n_rows,)](
            rows, out, keep, n_cols, rows.stride(0), rows.stride(1), k,
            LOW_BIT=_ZERO_LOW_BITS[x.dtype], BLOCK=block, num_warps=num_warps_for(block),
        )
    return out.view(x.shape), keep.view(torch.bool).view(x.shape)


def masked_grad(grad: Float[Tensor, "... d"], keep: Bool[Tensor, "... d"]) -> Float[Tensor, "... d"]:
    """The gradient at the forward's kept entries, zero elsewhere."""
    return torch.where(keep, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))

