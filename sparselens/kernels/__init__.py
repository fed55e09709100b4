"""Hot ops behind one function each (DESIGN.md, "Kernels").

Every op has a torch reference in :mod:`sparselens.kernels.reference` and a Triton kernel in its own
module (``*_triton.py``); the selections (``abstopk``, ``weight_topk_mask``) and ``rms_norm`` also
have a numba CPU kernel (``abstopk_cpu.py``, ``rms_norm_cpu.py``). ``linear`` is the model's
``F.linear``: on the CPU a weight with few nonzeros is multiplied by walking them (``linear_cpu.py``).
:mod:`sparselens.kernels.dispatch` picks one per call (Triton for CUDA tensors, numba for CPU
tensors where it has a kernel, torch otherwise; ``SPARSELENS_KERNELS=torch|triton|numba``
overrides). The model, the ablation hooks and the trainer call the names exported here, never an
implementation directly.
"""

from sparselens.kernels.csr import CSRWeight
from sparselens.kernels.ops import abstopk, linear, masked_ablate, rms_norm, rms_norm_frozen, sparse_linear, weight_topk_mask, weight_topk_masks
from sparselens.kernels.sparsify import SparseLinear, sparsify_linears

__all__ = [
    "CSRWeight",
    "SparseLinear",
    "abstopk",
    "linear",
    "masked_ablate",
    "rms_norm",
    "rms_norm_frozen",
    "sparse_linear",
    "sparsify_linears",
    "weight_topk_mask",
    "weight_topk_masks",
]
