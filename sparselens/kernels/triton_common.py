"""Shared helpers for the Triton kernels: interpreter detection and launch configurations.

Importing this module imports Triton, so only the dispatcher imports it, and only once it has
chosen the Triton backend. On CPU tensors Triton runs in interpreter mode, which needs
``TRITON_INTERPRET=1`` in the environment *before* Triton is imported.
"""

from __future__ import annotations

import os

import torch
import triton

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(*tensors: torch.Tensor) -> None:
    """Raise a clear error if a tensor cannot run on the Triton backend in this process."""
    for t in tensors:
        if t.device.type == "cpu" and not INTERPRETING:
            raise RuntimeError(
                "sparselens.kernels: the Triton backend got a CPU tensor but Triton is not in "
                "interpreter mode; set TRITON_INTERPRET=1 before importing triton, or use "
                "SPARSELENS_KERNELS=torch"
            )


def num_warps_for(block: int) -> int:
    """Warps for a one-row-per-program kernel holding ``block`` elements in registers."""
    if INTERPRETING:
        return 1
    return max(1, min(16, block // 256))


def row_block(n_cols: int) -> int:
    """Smallest power of two covering a row of ``n_cols`` (at least 16)."""
    return max(16, triton.next_power_of_2(n_cols))


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` viewed as ``[rows, last_dim]`` (a copy only if the leading dims cannot be merged)."""
    return x.reshape(-1, x.shape[-1])
