"""sparselens: TransformerLens for weight-sparse transformers."""

from sparselens.config import SparseTransformerConfig
from sparselens.model import HookedSparseTransformer
from sparselens.nodes import Node, NodeKind, NodeMask, NodeRegistry, NodeSite
from sparselens.prune import Circuit, PruneConfig, prune

__version__ = "0.1.0"

__all__ = [
    "Circuit",
    "HookedSparseTransformer",
    "Node",
    "NodeKind",
    "NodeMask",
    "NodeRegistry",
    "NodeSite",
    "PruneConfig",
    "SparseTransformerConfig",
    "prune",
]
