"""sparselens: TransformerLens for weight-sparse transformers.

The subpackages (``sparselens.faithfulness``, ``.bridges``, ``.viz``...) are imported on first
attribute access, so ``import sparselens; sparselens.faithfulness.evaluate(...)`` works without
paying for every subpackage at import time.
"""

import importlib
from typing import Any

from sparselens.config import SparseTransformerConfig
from sparselens.model import HookedSparseTransformer
from sparselens.nodes import Node, NodeKind, NodeMask, NodeRegistry, NodeSite
from sparselens.prune import Circuit, PruneConfig, prune

__version__ = "0.1.0"

#: imported on first access as ``sparselens.<name>``
SUBPACKAGES = ("bridges", "data", "faithfulness", "interventions", "kernels", "pretrained", "tasks", "train", "viz")


def __getattr__(name: str) -> Any:
    if name in SUBPACKAGES:
        return importlib.import_module(f"sparselens.{name}")
    raise AttributeError(f"module 'sparselens' has no attribute {name!r}")

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
