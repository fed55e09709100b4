"""Pruning to circuits: learned node masks as hooks, bisection to a target loss, Circuit objects."""

from sparselens.prune.circuit import Circuit, circuit_hooks, circuit_loss
from sparselens.prune.config import PruneConfig
from sparselens.prune.edges import EDGE_KINDS, Edge, EdgeUse, circuit_edges, count_edges, count_residual_links
from sparselens.prune.graph import circuit_graph, graph_json, write_graph_json, write_graphml
from sparselens.prune.learned_mask import LearnedMask
from sparselens.prune.pruner import MaskTrainer, prune, prune_sweep

__all__ = [
    "Circuit", "EDGE_KINDS", "Edge", "EdgeUse", "LearnedMask", "MaskTrainer", "PruneConfig", "circuit_edges", "circuit_graph",
    "circuit_hooks", "circuit_loss", "count_edges", "count_residual_links", "graph_json", "prune", "prune_sweep",
    "write_graph_json", "write_graphml",
]
