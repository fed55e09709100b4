"""Choosing an implementation per call: Triton kernels or torch references.

The rule (DESIGN.md, "Kernels"): Triton for CUDA tensors when Triton imports, the torch reference
otherwise. ``SPARSELENS_KERNELS=torch`` or ``=triton`` overrides it; with ``triton`` on CPU tensors
the kernels run in Triton's interpreter, which needs ``TRITON_INTERPRET=1`` set before Triton is
imported. Each distinct choice is logged once (logger ``sparselens.kernels``).

The Triton modules are imported lazily, on the first call that picks Triton, so importing
sparselens never imports Triton.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from types import ModuleType

import torch

logger = logging.getLogger("sparselens.kernels")

ENV_VAR = "SPARSELENS_KERNELS"
_BACKENDS = ("torch", "triton")
_logged: set[tuple[str, str]] = set()
_triton_ok: bool | None = None


def triton_available() -> bool:
    """Whether ``import triton`` works here (checked once)."""
    global _triton_ok
    if _triton_ok is None:
        _triton_ok = False
        if importlib.util.find_spec("triton") is not None:
            try:
                importlib.import_module("triton")
                _triton_ok = True
            except Exception as err:  # a broken install must not break the torch path
                logger.warning("triton is installed but fails to import (%s); using torch kernels", err)
    return _triton_ok


def backend_for(op: str, x: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"`` for running ``op`` on ``x``; logs each distinct choice once.

    Raises:
        ValueError: ``SPARSELENS_KERNELS`` holds something other than ``torch`` or ``triton``.
        RuntimeError: ``SPARSELENS_KERNELS=triton`` but Triton cannot be imported.
    """
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced and forced not in _BACKENDS:
        raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not understood; use 'torch' or 'triton' (or unset it)")
    if forced == "triton" and not triton_available():
        raise RuntimeError(f"{ENV_VAR}=triton but triton cannot be imported; install triton or use {ENV_VAR}=torch")
    if forced:
        backend, why = forced, f"{ENV_VAR}={forced}"
    elif x.is_cuda and triton_available():
        backend, why = "triton", "CUDA tensor and triton available"
    else:
        backend, why = "torch", ("CUDA tensor but triton unavailable" if x.is_cuda else f"{x.device.type} tensor")
    if (op, backend) not in _logged:
        _logged.add((op, backend))
        logger.info("sparselens.kernels: %s uses the %s implementation (%s)", op, backend, why)
    return backend


def triton_module(name: str) -> ModuleType:
    """Import ``sparselens.kernels.<name>`` (a Triton module) on first use."""
    return importlib.import_module(f"sparselens.kernels.{name}")
