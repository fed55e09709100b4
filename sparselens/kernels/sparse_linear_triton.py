"""``x @ W.T`` for a frozen low-density ``W`` stored row-compressed (CSR), in Triton.

One program per (block of ``BLOCK_M`` tokens, output row ``o``): it walks the nonzeros of row
``o`` in chunks of ``BLOCK_K``, gathers the matching input features of its tokens and accumulates
``sum_j x[t, col[j]] * val[j]`` in fp32. Work is proportional to the nonzeros, not to ``in*out``.
The launcher hands the kernel ``x`` transposed (features-major) so each gathered feature is a
contiguous run of tokens, and writes ``y`` output-major, transposing back at the end.
The backward (``dx = g @ W``) is the same kernel on the CSR of ``W.T``; ``W`` gets no gradient.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

from sparselens.kernels.csr import CSRWeight
from sparselens.kernels.triton_common import INTERPRETING, check_device


def _configs() -> list:
    if INTERPRETING:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_K": 16}, num_warps=1)]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_K": bk}, num_warps=w)
        for bm, bk, w in [(128, 16, 4), (256, 16, 8), (128, 32, 4), (64, 32, 2)]
    ]


@triton.autotune(configs=_configs(), key=["n_tok", "n_out", "n_in"])
@triton.jit
def _csr_linear_kernel(
    xt_ptr, crow_ptr, col_ptr, val_ptr, b_ptr, yt_ptr, n_tok, n_out, n_in,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    toks = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    o = tl.program_id(1).to(tl.int64)
    in_tok = toks < n_tok
    start = tl.load(crow_ptr + o)
    end = tl.load(crow_ptr + o + 1)
    acc = tl.zeros((BLOCK_M,), tl.float32)
    for p in range(start, end, BLOCK_K):
        idx = p + tl.arange(0, BLOCK_K)
        nz = idx < end
        cols = tl.load(col_ptr + idx, mask=nz, other=0).to(tl.int64)
        vals = tl.load(val_ptr + idx, mask=nz, other=0.0).to(tl.float32)
        xs = tl.load(xt_ptr + cols[:, None] * n_tok + toks[None, :], mask=nz[:, None] & in_tok[None, :], other=0.0)
        acc += tl.sum(xs.to(tl.float32) * vals[:, None], axis=0)
    if HAS_BIAS:
        acc += tl.load(b_ptr + o).to(tl.float32)
    tl.store(yt_ptr + o * n_tok + toks, acc.to(yt_ptr.dtype.element_ty), mask=in_tok)


def csr_matmul_t(x: Float[Tensor, "n in"], w: CSRWeight, bias: Optional[Tensor]) -> Float[Tensor, "n out"]:
    """``x @ W.T (+ bias)`` with ``W`` ``[out, in]`` in CSR; output in ``x``'s dtype, contiguous."""
    check_device(x, w.values)
    n_tok = x.shape[0]
    n_out, n_in = w.shape
    xt = x.T.contiguous()  # [in, n]: features-major, so a gathered feature is contiguous over tokens
    yt = torch.empty((n_out, n_tok), dtype=x.dtype, device=x.device)
    if n_tok > 0 and n_out > 0:
        grid = lambda meta: (triton.cdiv(n_tok, meta["BLOCK_M"]), n_out)
        _csr_linear_kernel[grid](
            xt, w.crow, w.col, w.values, bias if bias is not None else w.values, yt,
            n_tok, n_out, n_in, HAS_BIAS=bias is not None,
        )
    return yt.T.contiguous()


class SparseLinearFunction(torch.autograd.Function):
    """``x @ W.T + b`` for frozen CSR ``W``; gradients for ``x`` (via ``W.T``'s CSR) and ``b``."""

    @staticmethod
    def forward(ctx, x: Tensor, w: CSRWeight, w_t: CSRWeight, bias: Optional[Tensor]):
        ctx.w_t = w_t
        ctx.has_bias = bias is not None
        return csr_matmul_t(x, w, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        dx = csr_matmul_t(grad_out.contiguous(), ctx.w_t, None) if ctx.needs_input_grad[0] else None
        db = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return dx, None, None, db
