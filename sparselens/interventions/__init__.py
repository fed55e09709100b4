"""Hook factories: ablations, masks, norm freezing. Each returns ``fwd_hooks`` for ``run_with_hooks``."""

from sparselens.interventions.ablation import Ablation, ablation_hooks, freeze_norm_hooks
from sparselens.interventions.means import compute_means, pretraining_means

__all__ = ["Ablation", "ablation_hooks", "compute_means", "pretraining_means", "freeze_norm_hooks"]
