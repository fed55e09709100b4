"""Hot ops behind one function each (DESIGN.md, "Kernels").

Every op has a torch reference in :mod:`sparselens.kernels.reference`; the model, the ablation hooks
and the trainer call the names exported here, never an implementation directly.
"""

from sparselens.kernels.reference import abstopk, masked_ablate, rms_norm, rms_norm_frozen, weight_topk_mask

__all__ = ["abstopk", "masked_ablate", "rms_norm", "rms_norm_frozen", "weight_topk_mask"]
