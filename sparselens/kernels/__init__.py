"""Hot ops behind one function each (DESIGN.md, "Kernels").

Every op has a torch reference in :mod:`sparselens.kernels.reference` and a Triton kernel in its own
module (``*_triton.py``); :mod:`sparselens.kernels.dispatch` picks one per call (Triton for CUDA
tensors, torch otherwise, ``SPARSELENS_KERNELS=torch|triton`` overrides). The model, the ablation
hooks and the trainer call the names exported here, never an implementation directly.
"""

from sparselens.kernels.csr import CSRWeight
from sparselens.kernels.ops import abstopk, masked_ablate, rms_norm, rms_norm_frozen, sparse_linear, weight_topk_mask
from sparselens.kernels.sparsify import SparseLinear, sparsify_linears

__all__ = [
    "CSRWeight",
    "SparseLinear",
    "abstopk",
    "masked_ablate",
    "rms_norm",
    "rms_norm_frozen",
    "sparse_linear",
    "sparsify_linears",
    "weight_topk_mask",
]
