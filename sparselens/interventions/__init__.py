"""Hook factories: ablations, masks, norm freezing, and the reference run they compare against."""

from sparselens.interventions.ablation import Ablation, ablation_hooks, freeze_norm_hooks
from sparselens.interventions.means import compute_means, pretraining_means
from sparselens.interventions.reference import ReferenceRun

__all__ = ["Ablation", "ReferenceRun", "ablation_hooks", "compute_means", "pretraining_means", "freeze_norm_hooks"]
