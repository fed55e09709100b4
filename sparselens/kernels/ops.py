"""The public ops: argument checks, then the backend :mod:`~sparselens.kernels.dispatch` picks.

Both backends get the same checks, so a bad argument fails the same way on CPU and on a GPU.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from sparselens.kernels import reference
from sparselens.kernels.csr import CSRWeight
from sparselens.kernels.dispatch import backend_for, kernel_module

# Dtypes the kernels take; others (float64 on Triton, float8) use the torch reference.
KERNEL_DTYPES = {
    "triton": (torch.float32, torch.bfloat16, torch.float16),
    "numba": (torch.float32, torch.bfloat16, torch.float16, torch.float64),
}


def _backend(op: str, *tensors: Tensor) -> str:
    backend = backend_for(op, tensors[0])
    if backend != "torch" and any(t.dtype not in KERNEL_DTYPES[backend] for t in tensors if t.is_floating_point()):
        return "torch"
    return backend


def _check_k(op: str, k: int, width: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"{op}: k must be an int, got {type(k).__name__} {k!r}")
    if not 0 <= k <= width:
        raise ValueError(f"{op}: k={k} must be between 0 and the last dim ({width})")


def _check_float(op: str, name: str, t: Tensor) -> None:
    if not t.is_floating_point():
        raise ValueError(f"{op}: {name} must be a float tensor, got {t.dtype}")


class AbsTopKFunction(torch.autograd.Function):
    """AbsTopK through a kernel module (``abstopk_forward(x, k) -> (out, keep)`` and
    ``masked_grad(grad, keep)``): the backward passes the gradient through the forward's kept entries."""

    @staticmethod
    def forward(ctx: Any, x: Float[Tensor, "... d"], k: int, kernels: Any) -> Float[Tensor, "... d"]:
        out, keep = kernels.abstopk_forward(x, k)
        ctx.save_for_backward(keep)
        ctx.kernels = kernels
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Float[Tensor, "... d"]) -> tuple[Optional[Tensor], None, None]:
        (keep,) = ctx.saved_tensors
        return ctx.kernels.masked_grad(grad_out, keep), None, None


def abstopk(x: Float[Tensor, "... d"], k: int) -> Float[Tensor, "... d"]:
    """Keep the ``k`` largest-``|x|`` entries along the last dim, zero the rest.

    Ties go to the lowest index (every backend selects identical entries); NaN counts as the
    largest magnitude, above +inf, as in ``torch.topk``. The gradient flows to the kept entries
    only. With ``k == d`` the result is ``x`` itself, with ``k == 0`` zeros.

    Examples:
        >>> abstopk(torch.tensor([[1.0, -3.0, 2.0, -2.0]]), 2)
        tensor([[ 0., -3.,  2.,  0.]])
    """
    _check_float("abstopk", "x", x)
    if x.dim() == 0:
        raise ValueError("abstopk: x must have at least one dim (the one top-k runs over)")
    _check_k("abstopk", k, x.shape[-1])
    backend = _backend("abstopk", x)
    if backend == "triton":
        return AbsTopKFunction.apply(x, k, kernel_module("abstopk_triton"))
    if backend == "numba" and k < x.shape[-1]:
        return AbsTopKFunction.apply(x, k, kernel_module("abstopk_cpu"))
    return reference.abstopk(x, k)


def _check_norm_weight(op: str, x: Tensor, weight: Tensor) -> None:
    _check_float(op, "x", x)
    if x.dim() == 0 or weight.shape != (x.shape[-1],):
        raise ValueError(
            f"{op}: weight must have shape [d] = [{x.shape[-1] if x.dim() else '?'}] matching x's last dim, "
            f"got weight {tuple(weight.shape)} for x {tuple(x.shape)}"
        )


#: weight density at or below which :func:`linear` walks the nonzeros on the CPU (numba): the
#: crossover measured by ``benchmarks/kernels.py --linear`` on the 2-core development CPU lies
#: between 1/8 (forward 1.1-1.4x faster, forward + backward 0.95-1.2x) and 1/4 (0.5-0.9x)
CPU_NONZERO_LINEAR_MAX_DENSITY = 1 / 6


def linear(
    x: Float[Tensor, "... d_in"], weight: Float[Tensor, "d_out d_in"], bias: Optional[Float[Tensor, " d_out"]] = None
) -> Float[Tensor, "... d_out"]:
    """``F.linear(x, weight, bias)`` with gradients for all three, from ``weight``'s nonzeros where that pays.

    On the CPU with the numba backend, for float32/float64 and a weight with at most
    :data:`CPU_NONZERO_LINEAR_MAX_DENSITY` nonzeros, the product walks the nonzeros
    (:mod:`sparselens.kernels.linear_cpu`: the same values to float rounding; ``weight`` still gets
    its full dense gradient); everywhere else it is ``F.linear``.
    """
    if (
        weight.dim() == 2
        and x.dim() >= 1
        and x.shape[-1] == weight.shape[1]
        and x.numel() > 0
        and _backend("linear", x, weight) == "numba"
    ):
        cpu = kernel_module("linear_cpu")
        if x.dtype in cpu.DTYPES and weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype):
            w = weight.contiguous()
            crow, nnz = cpu.row_nonzeros(w.detach())
            if nnz <= CPU_NONZERO_LINEAR_MAX_DENSITY * w.numel():
                rows = x.reshape(-1, x.shape[-1]).contiguous()
                return cpu.LinearFunction.apply(rows, w, bias, crow).view(*x.shape[:-1], w.shape[0])
    return torch.nn.functional.linear(x, weight, bias)


def rms_norm(
    x: Float[Tensor, "... d"], weight: Float[Tensor, " d"], eps: float
) -> tuple[Float[Tensor, "... d"], Float[Tensor, "... 1"]]:
    """RMSNorm ``(x / scale * weight, scale)`` with ``scale = sqrt(mean(x**2) + eps)`` ``[..., 1]``.

    The scale is computed in fp32 and returned in ``x``'s dtype. Triton vs reference: fp32 inputs
    agree to about 1e-6 relative; bf16 inputs to bf16 rounding (the reference divides in bf16). The
    numba CPU kernel (fp32 and fp64, ``x`` and ``weight`` of one dtype) agrees to float rounding.
    """
    _check_norm_weight("rms_norm", x, weight)
    backend = _backend("rms_norm", x, weight)
    if backend == "triton":
        return kernel_module("rms_norm_triton").RMSNormFunction.apply(x, weight, float(eps))
    if backend == "numba":
        cpu = kernel_module("rms_norm_cpu")
        if x.dtype in cpu.DTYPES and weight.dtype == x.dtype:
            return cpu.RMSNormFunction.apply(x, weight, float(eps))
    return reference.rms_norm(x, weight, eps)


def _broadcasts_to(shape: torch.Size, target: tuple[int, ...]) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def rms_norm_frozen(
    x: Float[Tensor, "... d"], weight: Float[Tensor, " d"], scale: Float[Tensor, "... 1"]
) -> Float[Tensor, "... d"]:
    """``x / scale * weight`` with a given (frozen, patched) scale that broadcasts to ``[..., 1]``."""
    _check_norm_weight("rms_norm_frozen", x, weight)
    scale_shape = (*x.shape[:-1], 1)
    if scale.dim() == 0 or scale.shape[-1] != 1 or not _broadcasts_to(scale.shape, scale_shape):
        raise ValueError(
            f"rms_norm_frozen: scale must broadcast to {scale_shape} (one scale per token), got {tuple(scale.shape)}"
        )
    if _backend("rms_norm_frozen", x, weight, scale) == "triton":
        return kernel_module("rms_norm_triton").RMSNormFrozenFunction.apply(x, weight, scale.expand(scale_shape))
    return reference.rms_norm_frozen(x, weight, scale)


def masked_ablate(
    x: Float[Tensor, "... *channel"], mask: Tensor, replacement: Optional[Tensor]  # noqa: F821
) -> Float[Tensor, "... *channel"]:  # noqa: F821
    """``mask * x + (1 - mask) * replacement`` (``replacement=None`` means zero).

    Args:
        x: activations whose trailing dims are the node site's channel shape.
        mask: ``[*channel]``, bool or float (a float mask gets a gradient: ``sum(g * (x - r))``).
        replacement: None, ``[*channel]`` (mean ablation) or shaped like ``x`` (resample).

    With ``mask`` all ones the result equals ``x`` exactly on both backends. Triton computes in
    fp32: it matches the reference exactly for 0/1 masks and to fp32 rounding otherwise.
    """
    _check_float("masked_ablate", "x", x)
    channel = tuple(mask.shape)
    if mask.dim() == 0 or mask.dim() > x.dim() or tuple(x.shape[x.dim() - mask.dim():]) != channel:
        raise ValueError(
            f"masked_ablate: mask shape {channel} must equal the trailing dims of x {tuple(x.shape)} "
            "(one mask entry per channel of the node site)"
        )
    if replacement is not None and replacement.shape not in (mask.shape, x.shape):
        raise ValueError(
            f"masked_ablate: replacement must have the mask's shape {channel} (mean) or x's shape "
            f"{tuple(x.shape)} (resample), got {tuple(replacement.shape)}"
        )
    tensors = (x, mask) if replacement is None else (x, mask, replacement)
    if _backend("masked_ablate", *tensors) == "triton":
        n = mask.numel()
        out_dtype = x.dtype if replacement is None else torch.promote_types(x.dtype, replacement.dtype)
        r = None if replacement is None else replacement.reshape(-1, n) if replacement.shape == x.shape else replacement.reshape(n)
        fn = kernel_module("masked_ablate_triton").MaskedAblateFunction
        return fn.apply(x.reshape(-1, n), mask.reshape(n), r, out_dtype).view(x.shape)
    return reference.masked_ablate(x, mask, replacement)


def weight_topk_mask(w: Float[Tensor, "rows cols"], k: int, floor: int = 4, floor_dim: int = 0) -> Bool[Tensor, "rows cols"]:
    """The training sparsifier's mask; semantics in :func:`sparselens.kernels.reference.weight_topk_mask`.

    Every backend selects identical entries; the torch and Triton ones with no host synchronisation
    (the numba one runs on the CPU, where there is no host to synchronise with).
    """
    reference._check_weight_topk_args(w, k, floor, floor_dim)
    backend = _backend("weight_topk_mask", w)
    if backend == "triton":
        return kernel_module("weight_topk_triton").weight_topk_mask(w, k, floor, floor_dim)
    if backend == "numba":
        return kernel_module("abstopk_cpu").weight_topk_mask(w, k, floor, floor_dim)
    return reference.weight_topk_mask(w, k, floor, floor_dim)


def weight_topk_masks(jobs: Sequence[tuple[Tensor, int, int, int]]) -> list[Bool[Tensor, "rows cols"]]:
    """:func:`weight_topk_mask` of each ``(w, k, floor, floor_dim)``: the same masks, computed together.

    On the CPU with the numba backend and more than one torch thread the selections run on that
    many threads at once (each matrix's selection is independent); elsewhere one after another.
    """
    for w, k, floor, floor_dim in jobs:
        reference._check_weight_topk_args(w, k, floor, floor_dim)
    if jobs and all(_backend("weight_topk_mask", job[0]) == "numba" for job in jobs):
        return kernel_module("abstopk_cpu").weight_topk_masks(list(jobs), torch.get_num_threads())
    return [weight_topk_mask(*job) for job in jobs]


def sparse_linear(
    x: Float[Tensor, "... d_in"],
    w: CSRWeight,
    bias: Optional[Float[Tensor, " d_out"]] = None,
    w_t: Optional[CSRWeight] = None,
) -> Float[Tensor, "... d_out"]:
    """``x @ W.T + bias`` for a frozen ``W`` ``[d_out, d_in]`` in CSR (no gradient for ``W``).

    The torch backend multiplies with ``torch.sparse_csr``; the Triton kernel walks the nonzeros.
    Both accumulate in fp32 for fp32 inputs and match dense ``F.linear`` on ``W.to_dense()`` to
    accumulation-order rounding. ``w_t`` (the CSR of ``W.T``) serves the Triton backward; it is
    built on the fly when absent.
    """
    _check_float("sparse_linear", "x", x)
    if x.dim() == 0 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"sparse_linear: x's last dim must be d_in = {w.shape[1]}, got x {tuple(x.shape)}")
    if bias is not None and bias.shape != (w.shape[0],):
        raise ValueError(f"sparse_linear: bias must have shape [{w.shape[0]}], got {tuple(bias.shape)}")
    rows = x.reshape(-1, w.shape[1])
    if _backend("sparse_linear", x, w.values) == "triton":
        fn = kernel_module("sparse_linear_triton").SparseLinearFunction
        y = fn.apply(rows, w, w_t if w_t is not None else w.transpose(), bias)
    else:
        y = (w.to_torch().to(x.dtype) @ rows.T).T
        if bias is not None:
            y = y + bias
    return y.reshape(*x.shape[:-1], w.shape[0]).contiguous()

