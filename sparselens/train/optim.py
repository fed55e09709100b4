"""Optimizer pieces of METHOD.md section 2: gradient RMS normalisation, Adam, decoupled decay.

One training step, in order: backward -> :func:`normalize_grad_rms_` -> ``Adam.step()`` (no weight
decay inside Adam) -> the sparsifier masks the weights -> :func:`decay_` multiplies the matrices by
``1 - lr * weight_decay``. Decay after masking keeps pruned entries exactly zero.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Union, cast

import torch
from jaxtyping import Float
from torch import Tensor, nn

#: guards the division when every gradient is exactly zero (the step then changes nothing)
_TINY_RMS = 1e-30


def normalize_grad_rms_(params: Iterable[nn.Parameter]) -> Float[Tensor, ""]:
    """Divide all gradients by their global RMS (in place) so that their RMS becomes 1.

    The RMS is taken over every gradient entry of every parameter together:
    ``sqrt(sum_p ||g_p||^2 / sum_p numel(g_p))``. It stays on the device (no host sync).

    Returns:
        The RMS before normalisation, a 0-d float32 tensor.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        raise RuntimeError("normalize_grad_rms_: no parameter has a gradient; call backward() first")
    n_entries = sum(g.numel() for g in grads)
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))
    rms = total / math.sqrt(n_entries)
    torch._foreach_div_(grads, rms.clamp_min(_TINY_RMS))
    return rms


def build_adam(
    params: Union[Iterable[nn.Parameter], list[dict[str, Any]]], lr: float, betas: tuple[float, float], eps: float
) -> torch.optim.Adam:
    """Adam without built-in weight decay (decay is applied separately, after masking).

    ``params`` are parameters or torch parameter groups (dicts with ``"params"``). Uses torch's fused
    implementation (one kernel for all parameters; its step counters stay on the parameters'
    device) when every parameter is a float tensor on the CPU or a GPU.
    """
    entries: list[Any] = list(params)
    flat: list[Tensor] = []
    for entry in entries:
        flat.extend(entry["params"] if isinstance(entry, dict) else [entry])
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in flat)
    return torch.optim.Adam(entries, lr=lr, betas=betas, eps=eps, weight_decay=0.0, fused=fused)


def decayed_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters weight decay applies to: every matrix (``ndim >= 2``), not gains, biases, sinks."""
    return [p for p in model.parameters() if p.dim() >= 2]


@torch.no_grad()
def decay_(params: list[nn.Parameter], lr: float, weight_decay: float) -> None:
    """Decoupled weight decay ``p *= 1 - lr * weight_decay`` (in place, no host sync)."""
    if weight_decay and params:
        # list is invariant, so the stub's list[Tensor] does not take a list[Parameter] (a Parameter is a Tensor)
        torch._foreach_mul_(cast(list[Tensor], params), 1.0 - lr * weight_decay)
