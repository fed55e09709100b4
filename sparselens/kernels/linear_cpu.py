"""``x @ W.T + b`` on the CPU with work proportional to ``W``'s nonzeros (numba), with gradients.

A weight-sparse model's matrices are mostly zeros (L0 1/8 or 1/16), yet a dense ``F.linear``
multiplies every one of them. Here each call lists ``W``'s nonzeros (one pass over ``W``, cheap
beside the product) and computes the tokens in blocks of :data:`BLOCK_TOKENS`: the block is
transposed to features-major (``xb[i, t]``), then

    yb[o, :] = sum over the nonzeros W[o, i] of W[o, i] * xb[i, :]

one vectorised multiply-add over the block's tokens per nonzero, in ascending ``i``, and ``yb`` is
transposed back into ``y``, the bias added. Both buffers stay in cache. It runs in the calling
thread: sharing the blocks with a second Python thread, or among numba's threads (``prange``),
measured no faster inside a two-thread training step (docs/performance.md). The backward's ``dx`` is the same
kernel on the nonzeros of ``W.T``; ``dW`` stays a dense matmul (the sparsifier needs the gradient
of every weight, zero or not) and ``db`` a sum.

The sums run in another order than a dense matmul's, so results agree with ``F.linear`` to float
rounding. One difference beyond rounding: a non-finite input feature that meets only zero weights
does not reach the output (a dense product turns ``0 * inf`` into NaN in every output).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from jaxtyping import Float
from numba import njit
from torch import Tensor
from torch.autograd.function import once_differentiable

#: dtypes this kernel takes (``x``, ``W`` and ``b`` alike); others use ``F.linear``
DTYPES = (torch.float32, torch.float64)
#: tokens per block of the product (the features-major copies of a block stay in cache)
BLOCK_TOKENS = 128
#: side of the square tiles the transposes copy through
_TILE = 16
#: extra columns of the features-major buffers: row strides of a power of two bytes map a
#: transpose's rows onto the same cache sets
_PAD = 16


@njit(cache=True, nogil=True)
def _row_nonzeros(w, crow):
    """``crow[o + 1] - crow[o]`` = nonzeros of row ``o`` of ``w`` ``[out in]`` (prefix-summed); returns the total."""
    total = 0
    crow[0] = 0
    for o in range(w.shape[0]):
        for i in range(w.shape[1]):
            total += w[o, i] != 0
        crow[o + 1] = total
    return total


@njit(cache=True, nogil=True)
def _fill_rows(w, crow, col, val):
    """The CSR of ``w`` given its row offsets ``crow``: columns ascending within each row."""
    for o in range(w.shape[0]):
        p = crow[o]
        for i in range(w.shape[1]):
            if w[o, i] != 0:
                col[p] = i
                val[p] = w[o, i]
                p += 1


@njit(inline="always")
def _transpose_block(src, r_off, n_r, c_off, n_c, dst, dr_off, dc_off, bias, tile):
    """``dst[dr_off + c, dc_off + r] = src[r_off + r, c_off + c] + bias[r]`` for ``r < n_r``, ``c < n_c``, in tiles."""
    for r0 in range(0, n_r, _TILE):
        n_i = min(_TILE, n_r - r0)
        for c0 in range(0, n_c, _TILE):
            n_j = min(_TILE, n_c - c0)
            if n_i == _TILE and n_j == _TILE:
                for i in range(_TILE):
                    b = bias[r0 + i]
                    for j in range(_TILE):
                        tile[j, i] = src[r_off + r0 + i, c_off + c0 + j] + b
                for j in range(_TILE):
                    for i in range(_TILE):
                        dst[dr_off + c0 + j, dc_off + r0 + i] = tile[j, i]
            else:
                for i in range(n_i):
                    for j in range(n_j):
                        dst[dr_off + c0 + j, dc_off + r0 + i] = src[r_off + r0 + i, c_off + c0 + j] + bias[r0 + i]


@njit(cache=True, nogil=True)
def _linear_rows(crow, col, val, x, bias, y, t_lo, t_hi):
    """``y[t] = sum_p val[p] * x[t, col[p]] + bias`` over each output's nonzeros, for tokens ``t_lo <= t < t_hi``.

    ``x`` ``[tok in]``, ``y`` ``[tok out]``, ``bias`` ``[out]`` (zeros for none); ``crow``/``col``/``val``
    the CSR of ``W`` ``[out in]``.
    """
    n_in, n_out = x.shape[1], y.shape[1]
    xb = np.empty((n_in, BLOCK_TOKENS + _PAD), x.dtype)
    yb = np.empty((n_out, BLOCK_TOKENS + _PAD), x.dtype)
    tile = np.empty((_TILE, _TILE), x.dtype)
    no_bias = np.zeros(BLOCK_TOKENS, x.dtype)
    zero = x.dtype.type(0)
    for t0 in range(t_lo, t_hi, BLOCK_TOKENS):
        n_tok = min(BLOCK_TOKENS, t_hi - t0)
        _transpose_block(x, t0, n_tok, 0, n_in, xb, 0, 0, no_bias, tile)
        for o in range(n_out):
            acc = yb[o]
            for t in range(n_tok):
                acc[t] = zero
            for p in range(crow[o], crow[o + 1]):
                v = val[p]
                src = xb[col[p]]
                for t in range(n_tok):
                    acc[t] += v * src[t]
        _transpose_block(yb, 0, n_out, 0, n_tok, y, t0, 0, bias, tile)


def row_nonzeros(w: Float[Tensor, "out in"]) -> tuple[np.ndarray, int]:
    """``(crow, nnz)``: the row offsets of ``w``'s nonzeros (``w`` contiguous, detached) and their count."""
    crow = np.empty(w.shape[0] + 1, np.int64)
    return crow, int(_row_nonzeros(w.numpy(), crow))


def _product(crow: np.ndarray, col: np.ndarray, val: np.ndarray, x: Tensor, bias: Optional[Tensor], n_out: int) -> Tensor:
    """``y`` ``[tok n_out]`` of :func:`_linear_rows` on a contiguous ``x`` ``[tok in]``."""
    y = x.new_empty(x.shape[0], n_out)
    b = bias.detach().numpy() if bias is not None else np.zeros(n_out, x.numpy().dtype)
    _linear_rows(crow, col, val, x.numpy(), b, y.numpy(), 0, x.shape[0])
    return y


class LinearFunction(torch.autograd.Function):
    """``x @ W.T + b`` walking ``W``'s nonzeros; ``crow``: its row offsets (:func:`row_nonzeros`)."""

    @staticmethod
    def forward(
        ctx: Any, x: Float[Tensor, "tok in"], w: Float[Tensor, "out in"], b: Optional[Float[Tensor, " out"]], crow: np.ndarray
    ) -> Float[Tensor, "tok out"]:
        w_data = w.detach()
        nnz = int(crow[-1])
        col, val = np.empty(nnz, np.int64), np.empty(nnz, w_data.numpy().dtype)
        _fill_rows(w_data.numpy(), crow, col, val)
        ctx.save_for_backward(x, w)
        ctx.nnz, ctx.has_bias = nnz, b is not None
        return _product(crow, col, val, x.detach(), b, w.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: Float[Tensor, "tok out"]) -> tuple[Optional[Tensor], ...]:
        x, w = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            wt = w.detach().numpy().T  # the CSR of W.T, read from W's memory in column order
            col_start, row = np.empty(wt.shape[0] + 1, np.int64), np.empty(ctx.nnz, np.int64)
            val = np.empty(ctx.nnz, wt.dtype)
            _row_nonzeros(wt, col_start)
            _fill_rows(wt, col_start, row, val)
            grad_x = _product(col_start, row, val, grad_y, None, w.shape[1])
        if ctx.needs_input_grad[1]:
            grad_w = grad_y.T @ x  # dense: every weight's gradient
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum(dim=0)
        return grad_x, grad_w, grad_b, None
