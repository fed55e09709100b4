"""Visualisation: inline circuitsvis plots for Jupyter and the offline circuit viewer.

Plots (:mod:`sparselens.viz.plots`) return objects Jupyter renders inline with circuitsvis's
JavaScript embedded, so saved notebooks show them with no network. The circuit viewer
(:mod:`sparselens.viz.viewer`) is imported on first use.
"""

from typing import Any

from sparselens.viz.plots import (
    Plot,
    Snippets,
    attention_patterns,
    circuit_size_plot,
    node_activations,
    top_activations,
    top_snippets,
)

_VIEWER_NAMES = ("CircuitView", "viewer_data", "write_viewer")


def __getattr__(name: str) -> Any:
    """Load the circuit viewer's names from :mod:`sparselens.viz.viewer` on first access."""
    if name in _VIEWER_NAMES:
        from sparselens.viz import viewer

        return getattr(viewer, name)
    raise AttributeError(f"module 'sparselens.viz' has no attribute {name!r}")


__all__ = [
    "Plot",
    "Snippets",
    "attention_patterns",
    "circuit_size_plot",
    "node_activations",
    "top_activations",
    "top_snippets",
    *_VIEWER_NAMES,
]
