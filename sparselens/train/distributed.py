"""Data parallelism through ``torch.distributed`` (launched by ``torchrun`` or by hand).

Every rank holds the full model, takes its share of each global batch, and DDP averages the
gradients during ``backward``. Everything after that (gradient RMS, Adam, the sparsifier, weight
decay) is a deterministic function of the averaged gradients and the weights, so it runs
identically on every rank and the weights stay in sync without further communication.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device_type: str) -> bool:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1).

    Uses NCCL for CUDA and gloo otherwise. Returns whether this call created the group.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return True


def local_device(device: str) -> torch.device:
    """Resolve ``"auto"`` and give each rank its own GPU (``cuda:LOCAL_RANK``) under torchrun."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None and world()[1] > 1:
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return resolved
