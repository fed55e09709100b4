"""Choosing an implementation per call: Triton kernels, numba CPU kernels or torch references.

The rule (DESIGN.md, "Kernels"): Triton for CUDA tensors when Triton imports; for CPU tensors the
numba kernels (``sparselens/kernels/*_cpu.py``) of the ops that have one (:data:`NUMBA_OPS`) when
numba imports; the torch reference otherwise. ``SPARSELENS_KERNELS=torch``, ``=triton`` or
``=numba`` overrides it; with ``triton`` on CPU tensors the kernels run in Triton's interpreter,
which needs ``TRITON_INTERPRET=1`` set before Triton is imported; ``numba`` applies to the ops in
:data:`NUMBA_OPS` on CPU tensors (the others use the reference). Each distinct choice is logged once
(logger ``sparselens.kernels``).

The kernel modules are imported lazily, on the first call that picks them, so importing sparselens
imports neither Triton nor numba.
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
_BACKENDS = ("torch", "triton", "numba")
#: the ops with a numba CPU kernel
NUMBA_OPS = ("abstopk", "weight_topk_mask", "rms_norm", "linear")
_logged: set[tuple[str, str]] = set()
_triton_ok: bool | None = None
_numba_ok: bool | None = None


def _importable(module: str, package: str, consequence: str) -> bool:
    """Whether ``module`` imports (``package`` installed and working); a broken install only warns."""
    if importlib.util.find_spec(package) is None:
        return False
    try:
        importlib.import_module(module)
        return True
    except Exception as err:  # a broken install must not break the torch path
        logger.warning("%s is installed but fails to import (%s); %s", package, err, consequence)
        return False


def triton_available() -> bool:
    """Whether ``import triton`` works here (checked once)."""
    global _triton_ok
    if _triton_ok is None:
        _triton_ok = _importable("triton", "triton", "using torch kernels")
    return _triton_ok


def numba_available() -> bool:
    """Whether the numba CPU kernels import here (checked once; compiling happens on first use)."""
    global _numba_ok
    if _numba_ok is None:
        _numba_ok = _importable("sparselens.kernels.numba_common", "numba", "using torch kernels on CPU")
    return _numba_ok


def backend_for(op: str, x: torch.Tensor) -> str:
    """``"triton"``, ``"numba"`` or ``"torch"`` for running ``op`` on ``x``; logs each distinct choice once.

    Raises:
        ValueError: ``SPARSELENS_KERNELS`` holds something other than ``torch``, ``triton`` or ``numba``.
        RuntimeError: ``SPARSELENS_KERNELS`` names a backend that cannot be imported.
    """
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced and forced not in _BACKENDS:
        raise ValueError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not understood; use 'torch', 'triton' or 'numba' (or unset it)"
        )
    if forced == "triton" and not triton_available():
        raise RuntimeError(f"{ENV_VAR}=triton but triton cannot be imported; install triton or use {ENV_VAR}=torch")
    if forced == "numba" and not numba_available():
        raise RuntimeError(f"{ENV_VAR}=numba but numba cannot be imported; install numba or use {ENV_VAR}=torch")
    on_cpu = x.device.type == "cpu"
    if forced == "numba" and not (on_cpu and op in NUMBA_OPS):
        backend, why = "torch", f"{ENV_VAR}=numba, but no numba kernel for {op} on {x.device.type} tensors"
    elif forced:
        backend, why = forced, f"{ENV_VAR}={forced}"
    elif x.is_cuda and triton_available():
        backend, why = "triton", "CUDA tensor and triton available"
    elif on_cpu and op in NUMBA_OPS and numba_available():
        backend, why = "numba", "CPU tensor and numba available"
    elif x.is_cuda:
        backend, why = "torch", "CUDA tensor but triton unavailable"
    else:
        backend, why = "torch", f"{x.device.type} tensor" + (" (numba unavailable)" if on_cpu and op in NUMBA_OPS else "")
    if (op, backend) not in _logged:
        _logged.add((op, backend))
        logger.info("sparselens.kernels: %s uses the %s implementation (%s)", op, backend, why)
    return backend


def kernel_module(name: str) -> ModuleType:
    """Import ``sparselens.kernels.<name>`` (a Triton or numba kernel module) on first use."""
    return importlib.import_module(f"sparselens.kernels.{name}")
