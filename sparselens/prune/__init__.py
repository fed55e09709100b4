"""Pruning to circuits: learned node masks as hooks, bisection to a target loss, Circuit objects."""

from sparselens.prune.circuit import Circuit, Edge, circuit_edges, circuit_hooks, count_edges
from sparselens.prune.learned_mask import LearnedMask
from sparselens.prune.pruner import MaskTrainer, prune, prune_sweep

__all__ = ["Circuit", "Edge", "circuit_edges", "LearnedMask", "circuit_hooks", "count_edges", "MaskTrainer", "prune", "prune_sweep"]
