"""Visualisation: inline circuitsvis plots for Jupyter and the offline circuit viewer.

One module per plot (:mod:`~sparselens.viz.attention`, :mod:`~sparselens.viz.activations`,
:mod:`~sparselens.viz.snippets`, :mod:`~sparselens.viz.sizes`), each returning a
:class:`~sparselens.viz.plot.Plot` that Jupyter renders inline with circuitsvis's JavaScript
embedded, so saved notebooks show them with no network. The plots and the viewer compute what they
show in one place, :mod:`sparselens.viz.analysis` (the model against the circuit on a batch, and
top activations). The circuit viewer (:mod:`sparselens.viz.viewer`) is imported on first use.
"""

from typing import Any

from sparselens.viz.activations import node_activations
from sparselens.viz.analysis import Snippets, top_activations
from sparselens.viz.attention import attention_patterns
from sparselens.viz.plot import Plot
from sparselens.viz.sizes import circuit_size_plot
from sparselens.viz.snippets import top_snippets

_VIEWER_NAMES = ("CircuitView", "show_circuit", "viewer_data", "write_viewer")


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
