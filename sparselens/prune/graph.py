"""A circuit as a graph for graph tools: networkx, GraphML, and a plain JSON node-link document.

Nodes are the circuit's kept nodes, named as everywhere (``L0.neuron[17]``, ``L1.q[h2,5]``), with
attributes ``site`` (``L0.neuron``), ``kind`` (``neuron``, ``q``...), ``role`` (``residual read``,
``residual write``, ``neuron``, ``Q``, ``K``, ``V``), ``layer``, ``channel`` (within the head for
Q/K/V) and ``head`` (-1 where there is none); the tokens the edges reach outside the blocks are nodes
too (``embed:<id>``, ``pos:<p>``, ``bigram:<id>``, ``unembed:<id>``: kind ``token``, ``channel`` the
token id or the position, layer -1 for inputs and ``n_layers`` for outputs). Edges are :func:`~sparselens.prune.edges.circuit_edges` with
``kind`` and ``weight`` (``q-k`` edges run from the Q channel to the K channel, weight 1), and, with
``residual_links=True``, the residual stream's identity links (kind ``residual``, weight 1), which
are not weights and not counted in ``n_edges``.

GraphML stores no None, so every attribute is a string, an int or a float.

Examples:
    >>> graph = circuit.to_networkx(model)
    >>> graph.nodes["L0.neuron[17]"]["layer"], graph.number_of_edges()
    >>> write_graphml(graph, "circuit.graphml"); write_graph_json(graph, "circuit.graph.json")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from sparselens.files import write_text_atomic

if TYPE_CHECKING:
    import networkx as nx

    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.prune.circuit import Circuit


def circuit_graph(circuit: "Circuit", model: "HookedSparseTransformer", *, residual_links: bool = True) -> "nx.DiGraph":
    """The circuit's nodes and edges as a ``networkx.DiGraph`` (attributes as in the module docstring)."""
    import networkx as nx

    graph = nx.DiGraph(task=circuit.task, ablation=circuit.ablation, n_nodes=circuit.n_nodes, n_edges=circuit.n_edges,
                       model_fingerprint=circuit.model_fingerprint)
    for node in circuit.node_mask(model).nodes():
        site = node.site
        per_head = site.channel_shape[-1]
        graph.add_node(node.name, site=site.name, kind=site.kind.value, role=site.kind.role, layer=site.layer,
                       channel=node.index % per_head if site.kind.is_head_channel else node.index,
                       head=-1 if node.head is None else node.head)
    for edge in circuit.edges(model):
        for end in (edge.src, edge.dst):
            if end not in graph:
                prefix, token = end.split(":", 1)
                graph.add_node(end, site=prefix, kind="token", role=prefix, channel=int(token), head=-1,
                               layer=model.cfg.n_layers if prefix == "unembed" else -1)
        graph.add_edge(edge.src, edge.dst, kind=edge.kind, weight=float(edge.weight))
    if residual_links:
        for write, read in circuit.residual_link_pairs(model):
            graph.add_edge(write, read, kind="residual", weight=1.0)
    return graph


def write_graphml(graph: "nx.DiGraph", path: Union[str, Path]) -> Path:
    """Write ``graph`` as GraphML (Gephi, Cytoscape, yEd, igraph read it), atomically."""
    import networkx as nx

    return write_text_atomic(path, "\n".join(nx.generate_graphml(graph)) + "\n")


def graph_json(graph: "nx.DiGraph") -> dict[str, Any]:
    """``{"graph": {...}, "nodes": [{"id": ..., attributes}], "edges": [{"source", "target", attributes}]}``."""
    return {
        "graph": dict(graph.graph),
        "nodes": [{"id": name, **attrs} for name, attrs in graph.nodes(data=True)],
        "edges": [{"source": src, "target": dst, **attrs} for src, dst, attrs in graph.edges(data=True)],
    }


def write_graph_json(graph: "nx.DiGraph", path: Union[str, Path]) -> Path:
    """Write :func:`graph_json` of ``graph`` to ``path``, atomically."""
    return write_text_atomic(path, json.dumps(graph_json(graph), indent=1))


__all__ = ["circuit_graph", "graph_json", "write_graph_json", "write_graphml"]
