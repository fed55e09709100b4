"""Mask ablation ``m*x + (1-m)*r`` in Triton with a fused backward that also yields ``dL/dm``.

``x`` is viewed as ``[rows, n]`` (``n`` = the product of the mask's dims); the mask is ``[n]``; the
replacement is absent (zero), per channel ``[n]`` (mean ablation), or per element ``[rows, n]``
(resample / stochastic ablation). Arithmetic is fp32. The backward kernel reads ``g``, ``x`` and
``r`` once and writes ``dx = m*g`` plus per-row-block partial sums of ``g*(x - r)`` (for ``dm``)
and of ``g`` (for a per-channel ``dr = (1-m)*sum_rows g``); a torch sum over the partials finishes
the reduction, so the result is deterministic.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from sparselens.kernels.triton_common import INTERPRETING, check_device

# Replacement layouts (constexpr R_KIND).
_R_NONE, _R_CHANNEL, _R_FULL = 0, 1, 2


def _configs() -> list:
    if INTERPRETING:
        return [triton.Config({"BLOCK_M": 8, "BLOCK_N": 16}, num_warps=1)]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w)
        for bm, bn, w in [(32, 128, 4), (64, 128, 4), (16, 256, 4), (64, 256, 8)]
    ]


@triton.autotune(configs=_configs(), key=["n_rows", "n_cols", "R_KIND"])
@triton.jit
def _ablate_fwd_kernel(
    x_ptr, m_ptr, r_ptr, out_ptr, n_rows, n_cols, stride_xr, stride_xc,
    R_KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    inb = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    x = tl.load(x_ptr + rows[:, None] * stride_xr + cols[None, :] * stride_xc, mask=inb, other=0.0)
    m = tl.load(m_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)[None, :]
    out = m * x.to(tl.float32)
    if R_KIND == 1:
        r = tl.load(r_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)[None, :]
        out += (1.0 - m) * r
    elif R_KIND == 2:
        r = tl.load(r_ptr + rows[:, None] * n_cols + cols[None, :], mask=inb, other=0.0).to(tl.float32)
        out += (1.0 - m) * r
    tl.store(out_ptr + rows[:, None] * n_cols + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=inb)


@triton.autotune(configs=_configs(), key=["n_rows", "n_cols", "R_KIND"])
@triton.jit
def _ablate_bwd_kernel(
    g_ptr, x_ptr, m_ptr, r_ptr, dx_ptr, dr_ptr, dm_part_ptr, gsum_part_ptr,
    n_rows, n_cols, stride_gr, stride_gc, stride_xr, stride_xc,
    R_KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    inb = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    g = tl.load(g_ptr + rows[:, None] * stride_gr + cols[None, :] * stride_gc, mask=inb, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + rows[:, None] * stride_xr + cols[None, :] * stride_xc, mask=inb, other=0.0).to(tl.float32)
    m = tl.load(m_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)[None, :]
    tl.store(dx_ptr + rows[:, None] * n_cols + cols[None, :], (m * g).to(dx_ptr.dtype.element_ty), mask=inb)
    diff = x
    if R_KIND == 1:
        diff = x - tl.load(r_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)[None, :]
        tl.store(gsum_part_ptr + pid_m * n_cols + cols, tl.sum(g, axis=0), mask=cols < n_cols)
    elif R_KIND == 2:
        r_offs = rows[:, None] * n_cols + cols[None, :]
        diff = x - tl.load(r_ptr + r_offs, mask=inb, other=0.0).to(tl.float32)
        tl.store(dr_ptr + r_offs, ((1.0 - m) * g).to(dr_ptr.dtype.element_ty), mask=inb)
    tl.store(dm_part_ptr + pid_m * n_cols + cols, tl.sum(g * diff, axis=0), mask=cols < n_cols)


class MaskedAblateFunction(torch.autograd.Function):
    """``m*x + (1-m)*r`` on ``x [rows, n]``, ``m [n]``, ``r`` None / ``[n]`` / ``[rows, n]``.

    Returns gradients for ``x``, ``m`` (float masks) and ``r`` (when it is a tensor).
    """

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor, replacement: Optional[Tensor], out_dtype: torch.dtype):
        check_device(x, mask)
        n_rows, n_cols = x.shape
        r_kind = _R_NONE if replacement is None else (_R_CHANNEL if replacement.dim() == 1 else _R_FULL)
        r = replacement.contiguous() if replacement is not None else mask
        m = mask.contiguous() if mask.dtype != torch.bool else mask.to(torch.float32)
        out = torch.empty((n_rows, n_cols), dtype=out_dtype, device=x.device)
        grid = lambda meta: (triton.cdiv(n_rows, meta["BLOCK_M"]), triton.cdiv(n_cols, meta["BLOCK_N"]))
        if x.numel() > 0:
            _ablate_fwd_kernel[grid](x, m, r, out, n_rows, n_cols, x.stride(0), x.stride(1), R_KIND=r_kind)
        ctx.r_kind = r_kind
        ctx.mask_dtype = mask.dtype
        ctx.save_for_backward(x, m, r)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, m, r = ctx.saved_tensors
        n_rows, n_cols = x.shape
        dx = torch.empty_like(x, memory_format=torch.contiguous_format)
        dr = torch.empty((n_rows, n_cols), dtype=r.dtype, device=x.device) if ctx.r_kind == _R_FULL else dx  # dx: unused
        # Partial sums are sized for the smallest BLOCK_M of any config (one row per row block).
        min_block_m = min(c.kwargs["BLOCK_M"] for c in _configs())
        n_parts = max(1, triton.cdiv(n_rows, min_block_m))
        dm_part = torch.zeros((n_parts, n_cols), dtype=torch.float32, device=x.device)
        gsum_part = torch.zeros((n_parts, n_cols), dtype=torch.float32, device=x.device)
        grid = lambda meta: (triton.cdiv(n_rows, meta["BLOCK_M"]), triton.cdiv(n_cols, meta["BLOCK_N"]))
        if x.numel() > 0:
            _ablate_bwd_kernel[grid](
                grad_out, x, m, r, dx, dr, dm_part, gsum_part, n_rows, n_cols,
                grad_out.stride(0), grad_out.stride(1), x.stride(0), x.stride(1), R_KIND=ctx.r_kind,
            )
        dm = dm_part.sum(0).to(ctx.mask_dtype) if ctx.mask_dtype != torch.bool else None
        if ctx.r_kind == _R_CHANNEL:
            d_r = ((1.0 - m.float()) * gsum_part.sum(0)).to(r.dtype)
        elif ctx.r_kind == _R_FULL:
            d_r = dr
        else:
            d_r = None
        return dx, dm, d_r, None
