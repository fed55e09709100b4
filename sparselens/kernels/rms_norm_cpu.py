"""RMSNorm on the CPU in one pass over the rows per direction (numba), for float32 and float64.

The reference (:func:`sparselens.kernels.reference.rms_norm`) runs about six elementwise passes
forward and ten backward; on the CPU those were the largest non-matmul cost of a training step.
Per row ``x`` ``[d]``, with ``g`` the output's gradient and ``gs`` the scale's:

    scale = sqrt(mean(x**2) + eps)          out = x / scale * w
    dx = (g * w - x * (sum(g * w * x) / scale**2 - gs) / d) / scale
    dw = sum over rows of g * x / scale

``dw`` is summed per block of :data:`ROWS_PER_BLOCK` rows, then over the blocks in order, so the
result does not depend on the thread count. Matches the reference to float rounding (the sums run
in another order). Compiled on first use and cached on disk, like :mod:`.abstopk_cpu`.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from numba import njit, prange
from torch import Tensor

from sparselens.kernels.numba_common import launch

#: dtypes this kernel takes (``x`` and ``w`` alike); others use the reference
DTYPES = (torch.float32, torch.float64)
#: rows whose ``dw`` terms are summed together before the blocks are
ROWS_PER_BLOCK = 64


@njit(fastmath={"reassoc"}, nogil=True, cache=True)
def _sum_sq(a):
    """``sum(a ** 2)`` in ``a``'s dtype, reassociated so that it vectorises."""
    total = a.dtype.type(0)
    for j in range(a.shape[0]):
        total += a[j] * a[j]
    return total


@njit(fastmath={"reassoc"}, nogil=True, cache=True)
def _dot3(a, b, c):
    """``sum(a * b * c)`` in ``a``'s dtype, reassociated so that it vectorises."""
    total = a.dtype.type(0)
    for j in range(a.shape[0]):
        total += a[j] * b[j] * c[j]
    return total


@njit(inline="always")
def _norm_row(row, w, eps, out_row):
    """One row: write ``out_row``, return the scale. Every scalar in ``row``'s dtype (float32 math)."""
    as_float = row.dtype.type
    s = np.sqrt(_sum_sq(row) / as_float(row.shape[0]) + as_float(eps))
    for j in range(row.shape[0]):
        out_row[j] = row[j] / s * w[j]
    return s


@njit(cache=True, nogil=True)
def _norm(x, w, eps, out, scale):
    """Forward over every row of ``x`` ``[rows d]``: ``out`` ``[rows d]``, ``scale`` ``[rows]``."""
    for r in range(x.shape[0]):
        scale[r] = _norm_row(x[r], w, eps, out[r])


@njit(parallel=True, cache=True, nogil=True)
def _norm_parallel(x, w, eps, out, scale):
    """:func:`_norm` with the rows spread over numba's threads."""
    for r in prange(x.shape[0]):
        scale[r] = _norm_row(x[r], w, eps, out[r])


@njit(inline="always")
def _norm_grad_block(x, w, scale, g, g_scale, dx, dw_block, start, stop):
    """Rows ``start:stop``: write their ``dx`` rows, and their ``dw`` terms summed into ``dw_block``."""
    as_float = x.dtype.type
    d = as_float(x.shape[1])
    dw_block[:] = 0
    for r in range(start, stop):
        row, g_row, dx_row = x[r], g[r], dx[r]
        inv = as_float(1) / scale[r]
        coef = (_dot3(g_row, w, row) * inv * inv - g_scale[r]) / d
        for j in range(row.shape[0]):
            dx_row[j] = (g_row[j] * w[j] - row[j] * coef) * inv
            dw_block[j] += g_row[j] * row[j] * inv


@njit(inline="always")
def _sum_blocks(dw_blocks, dw):
    dw[:] = 0
    for b in range(dw_blocks.shape[0]):  # in block order: the same sum whatever the threads
        dw += dw_blocks[b]


@njit(cache=True, nogil=True)
def _norm_grad(x, w, scale, g, g_scale, dx, dw_blocks, dw):
    """Backward: ``dx`` ``[rows d]`` and ``dw`` ``[d]``, via ``dw_blocks`` ``[blocks d]`` (scratch)."""
    n_rows = x.shape[0]
    for b in range(dw_blocks.shape[0]):
        start = b * ROWS_PER_BLOCK
        _norm_grad_block(x, w, scale, g, g_scale, dx, dw_blocks[b], start, min(start + ROWS_PER_BLOCK, n_rows))
    _sum_blocks(dw_blocks, dw)


@njit(parallel=True, cache=True, nogil=True)
def _norm_grad_parallel(x, w, scale, g, g_scale, dx, dw_blocks, dw):
    """:func:`_norm_grad` with the blocks spread over numba's threads."""
    n_rows = x.shape[0]
    for b in prange(dw_blocks.shape[0]):
        start = b * ROWS_PER_BLOCK
        _norm_grad_block(x, w, scale, g, g_scale, dx, dw_blocks[b], start, min(start + ROWS_PER_BLOCK, n_rows))
    _sum_blocks(dw_blocks, dw)


def rms_norm_forward(
    x: Float[Tensor, "... d"], weight: Float[Tensor, " d"], eps: float
) -> tuple[Float[Tensor, "... d"], Float[Tensor, "... 1"]]:
    """``(x / scale * weight, scale)``; ``x`` and ``weight`` CPU tensors of one dtype in :data:`DTYPES`."""
    rows = x.detach().reshape(-1, x.shape[-1]).contiguous()
    out = torch.empty_like(rows)
    scale = torch.empty(rows.shape[0], dtype=x.dtype)
    if rows.numel() > 0:
        args = (rows.numpy(), weight.detach().contiguous().numpy(), float(eps), out.numpy(), scale.numpy())
        launch(_norm, _norm_parallel, rows.numel(), *args)
    return out.view(x.shape), scale.view(*x.shape[:-1], 1)


class RMSNormFunction(torch.autograd.Function):
    """Autograd wrapper of :func:`rms_norm_forward` (gradients for ``x`` and ``weight``)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        out, scale = rms_norm_forward(x, weight, eps)
        ctx.save_for_backward(x, weight, scale)
        ctx.set_materialize_grads(False)
        return out, scale

    @staticmethod
    def backward(ctx, g_out, g_scale):
        x, weight, scale = ctx.saved_tensors
        d = x.shape[-1]
        rows = x.reshape(-1, d).contiguous()
        n_rows = rows.shape[0]
        g = torch.zeros_like(rows) if g_out is None else g_out.reshape(-1, d).contiguous()
        gs = torch.zeros(n_rows, dtype=x.dtype) if g_scale is None else g_scale.reshape(n_rows).contiguous()
        dx, dw = torch.empty_like(rows), torch.empty(d, dtype=x.dtype)
        dw_blocks = torch.empty(-(-n_rows // ROWS_PER_BLOCK), d, dtype=x.dtype)
        args = (
            rows.numpy(), weight.detach().contiguous().numpy(), scale.reshape(n_rows).numpy(), g.numpy(),
            gs.numpy(), dx.numpy(), dw_blocks.numpy(), dw.numpy(),
        )
        launch(_norm_grad, _norm_grad_parallel, rows.numel(), *args)
        return dx.view(x.shape), dw, None
