"""RMSNorm in Triton, emitting the per-token scale, plus the frozen-scale variant.

Forward (one program per row): ``s = sqrt(mean(x**2) + eps)`` in fp32, ``out = x / s * w``.
The scale is returned in ``x``'s dtype (as the reference does), and ``out`` is computed in fp32
from the rounded scale, then cast to the promoted dtype of ``x`` and ``w``.

Backward, per row with ``g = dL/dout`` and ``g_s = dL/ds`` (``n`` = width):

- ``rms_norm``: ``dx = g*w/s + x/(n*s) * (g_s - sum(g*w*x)/s**2)``, ``dw = sum_rows g*x/s``;
- ``rms_norm_frozen`` (``s`` an input): ``dx = g*w/s``, ``dw = sum_rows g*x/s``,
  ``ds = -sum(g*w*x)/s**2``.

``dw`` is reduced in two stages (per-program partial sums in fp32, then a torch sum), so it is
deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

from sparselens.kernels.triton_common import INTERPRETING, as_rows, check_device, num_warps_for, row_block


@triton.jit
def _rms_fwd_kernel(
    x_ptr, w_ptr, s_in_ptr, out_ptr, s_out_ptr, n_cols, stride_xr, stride_xc, eps,
    FROZEN: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    valid = cols < n_cols
    x = tl.load(x_ptr + row * stride_xr + cols * stride_xc, mask=valid, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=valid, other=0.0).to(tl.float32)
    if FROZEN:
        s = tl.load(s_in_ptr + row).to(tl.float32)
    else:
        s = tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
        tl.store(s_out_ptr + row, s.to(s_out_ptr.dtype.element_ty))
        s = s.to(s_out_ptr.dtype.element_ty).to(tl.float32)  # divide by the scale we return
    tl.store(out_ptr + row * n_cols + cols, (x / s * w).to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _rms_bwd_kernel(
    x_ptr, w_ptr, s_ptr, g_ptr, gs_ptr, dx_ptr, ds_ptr, dw_part_ptr,
    n_rows, n_cols, rows_per_prog, stride_xr, stride_xc, stride_gr, stride_gc,
    FROZEN: tl.constexpr, HAS_GS: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    valid = cols < n_cols
    w = tl.load(w_ptr + cols, mask=valid, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), tl.float32)
    for i in range(rows_per_prog):
        row = (pid * rows_per_prog + i).to(tl.int64)
        if row < n_rows:
            x = tl.load(x_ptr + row * stride_xr + cols * stride_xc, mask=valid, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + row * stride_gr + cols * stride_gc, mask=valid, other=0.0).to(tl.float32)
            s = tl.load(s_ptr + row).to(tl.float32)
            gwx = tl.sum(g * w * x, axis=0)
            if FROZEN:
                dx = g * w / s
                tl.store(ds_ptr + row, -gwx / (s * s))
            else:
                g_s = 0.0
                if HAS_GS:
                    g_s = tl.load(gs_ptr + row).to(tl.float32)
                dx = g * w / s + x / (n_cols * s) * (g_s - gwx / (s * s))
            tl.store(dx_ptr + row * n_cols + cols, dx.to(dx_ptr.dtype.element_ty), mask=valid)
            dw += g * x / s
    tl.store(dw_part_ptr + pid * n_cols + cols, dw, mask=valid)


def _n_programs(n_rows: int) -> int:
    return min(n_rows, 4 if INTERPRETING else 1024)


def _backward(x, w, s, g, g_s, frozen: bool):
    """Shared launcher for both backwards; returns ``(dx, dw, ds_or_None)`` in fp32 for dw/ds."""
    rows, g_rows = as_rows(x), as_rows(g)
    n_rows, n_cols = rows.shape
    dx = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    ds = torch.empty(n_rows, dtype=torch.float32, device=x.device) if frozen else dx  # dx: unused placeholder
    n_prog = max(1, _n_programs(n_rows))
    dw_part = torch.zeros((n_prog, n_cols), dtype=torch.float32, device=x.device)
    if n_rows > 0:
        block = row_block(n_cols)
        gs = g_s.reshape(-1).contiguous() if g_s is not None else s
        _rms_bwd_kernel[(n_prog,)](
            rows, w, s.reshape(-1).contiguous(), g_rows, gs, dx, ds, dw_part,
            n_rows, n_cols, triton.cdiv(n_rows, n_prog), rows.stride(0), rows.stride(1),
            g_rows.stride(0), g_rows.stride(1),
            FROZEN=frozen, HAS_GS=g_s is not None, BLOCK=block, num_warps=num_warps_for(block),
        )
    return dx.view(x.shape), dw_part.sum(0), (ds.view(s.shape) if frozen else None)


class RMSNormFunction(torch.autograd.Function):
    """``(x / s * w, s)`` with ``s = sqrt(mean(x**2) + eps)``; differentiable in ``x`` and ``w``."""

    @staticmethod
    def forward(ctx, x: Float[Tensor, "... d"], w: Float[Tensor, " d"], eps: float):
        check_device(x, w)
        rows = as_rows(x)
        n_rows, n_cols = rows.shape
        out_dtype = torch.promote_types(x.dtype, w.dtype)
        out = torch.empty((n_rows, n_cols), dtype=out_dtype, device=x.device)
        scale = torch.empty(n_rows, dtype=x.dtype, device=x.device)
        if n_rows > 0:
            block = row_block(n_cols)
            _rms_fwd_kernel[(n_rows,)](
                rows, w.contiguous(), scale, out, scale, n_cols, rows.stride(0), rows.stride(1), eps,
                FROZEN=False, BLOCK=block, num_warps=num_warps_for(block),
            )
        scale = scale.view(*x.shape[:-1], 1)
        ctx.save_for_backward(x, w, scale)
        return out.view(x.shape), scale

    @staticmethod
    def backward(ctx, grad_out, grad_scale):
        x, w, scale = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(x)
        dx, dw, _ = _backward(x, w.contiguous(), scale, grad_out, grad_scale, frozen=False)
        return dx, dw.to(w.dtype), None


class RMSNormFrozenFunction(torch.autograd.Function):
    """``x / s * w`` with a given ``s`` of shape ``[..., 1]``; differentiable in ``x``, ``w`` and ``s``."""

    @staticmethod
    def forward(ctx, x: Float[Tensor, "... d"], w: Float[Tensor, " d"], scale: Float[Tensor, "... 1"]):
        check_device(x, w, scale)
        rows = as_rows(x)
        n_rows, n_cols = rows.shape
        out_dtype = torch.promote_types(torch.promote_types(x.dtype, w.dtype), scale.dtype)
        out = torch.empty((n_rows, n_cols), dtype=out_dtype, device=x.device)
        s = scale.reshape(-1).contiguous()
        if n_rows > 0:
            block = row_block(n_cols)
            _rms_fwd_kernel[(n_rows,)](
                rows, w.contiguous(), s, out, s, n_cols, rows.stride(0), rows.stride(1), 0.0,
                FROZEN=True, BLOCK=block, num_warps=num_warps_for(block),
            )
        ctx.save_for_backward(x, w, scale)
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad_out):
        x, w, scale = ctx.saved_tensors
        dx, dw, ds = _backward(x, w.contiguous(), scale, grad_out, None, frozen=True)
        return dx, dw.to(w.dtype), ds.to(scale.dtype)
