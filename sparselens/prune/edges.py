"""Edges of a circuit: the nonzero weights between its kept nodes (METHOD.md section 4).

An edge is one weight entry, so every kind below is a count of entries, read from the block
wiring (:data:`sparselens.wiring.BLOCK_WIRING`) and the model's embedding tables:

- ``attn_in->q``, ``attn_in->k``, ``attn_in->v``, ``v->attn_out``, ``mlp_in->neuron``,
  ``neuron->mlp_out``: ``weight[j, i] != 0`` with kept source node ``i`` and kept destination ``j``.
- ``q-k``: a kept ``q[h, c]`` and the kept ``k[h, c]`` it is multiplied with in head ``h``'s scores
  (no weight of its own; enumerated with weight 1).
- ``embed->read``: ``W_E[t, c] != 0`` for a token ``t`` the task's prompts use and a kept residual
  read of channel ``c`` whose norm gain ``w[c] != 0`` (the embedding reaches every later read
  through the residual stream).
- ``pos->read``: the same for learned positions ``W_pos[p, c]``, ``p`` below the prompts' length.
- ``write->unembed``: ``W_U[c, t] != 0`` (and ``ln_final.w[c] != 0``) for a kept residual write of
  channel ``c`` and a target token ``t`` of the task.
- ``bigram``: ``table[t_in, t] != 0`` for a token the prompts use and a target token (models with
  a bigram table).

Not edges: the residual stream's identity between a kept write of channel ``c`` and a kept read of
``c`` later in the forward (with ``w[c] != 0``). They are not weights and grow with the square of
the depth; :func:`count_residual_links` reports them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from torch import Tensor

from sparselens.nodes import NodeMask, NodeSite
from sparselens.wiring import BLOCK_WIRING, QK_PAIR, READ_NORM, RESIDUAL_READS, RESIDUAL_WRITES

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer


@dataclass(frozen=True)
class Edge:
    """One edge: ``kind`` (see the module docstring), its two ends and its weight.

    ``src`` is a node name, ``"embed:<token>"``, ``"pos:<position>"`` or ``"bigram:<token>"``;
    ``dst`` a node name or ``"unembed:<token>"``. Embedding and position edges carry
    ``W[t, c] * w[c]`` (the entry times the reading norm's gain), unembedding edges
    ``W_U[c, t] * ln_final.w[c]``, q-k edges 1.
    """

    kind: str
    src: str
    dst: str
    weight: float


@dataclass(frozen=True)
class EdgeUse:
    """What a circuit's task uses outside the blocks: which tokens, positions and targets.

    Attributes:
        input_ids: token ids occurring in the task's prompts (embedding and bigram edges).
        target_ids: the task's answer token ids (unembedding and bigram edges).
        n_positions: the prompts' length in tokens (learned-position edges).
    """

    input_ids: tuple[int, ...] = ()
    target_ids: tuple[int, ...] = ()
    n_positions: int = 0


@dataclass
class _Block:
    """Edges of one kind as a weight matrix ``[n_dst, n_src]`` that is nonzero exactly at edges."""

    kind: str
    weights: Tensor
    src: Callable[[int], str]
    dst: Callable[[int], str]


def _names(site: NodeSite, kept: Tensor) -> Callable[[int], str]:
    return lambda i: site.node(int(kept[i])).name


def _blocks(model: "HookedSparseTransformer", mask: NodeMask, use: EdgeUse) -> Iterator[_Block]:
    registry = model.node_registry
    kept = {site.name: mask[site].nonzero().flatten() for site in registry.sites}
    inputs = torch.tensor(use.input_ids, dtype=torch.long)
    targets = torch.tensor(use.target_ids, dtype=torch.long)
    final_gain = model.ln_final.w.detach()
    for layer, block in enumerate(model.blocks):
        params = dict(block.named_parameters())
        for wire in BLOCK_WIRING:
            src, dst = registry.at(layer, wire.src), registry.at(layer, wire.dst)
            w = params[wire.param].detach()[kept[dst.name]][:, kept[src.name]]
            yield _Block(wire.kind, w, _names(src, kept[src.name]), _names(dst, kept[dst.name]))
        q, k = (registry.at(layer, kind) for kind in QK_PAIR)
        both = (mask[q] & mask[k]).nonzero().flatten()
        yield _Block("q-k", torch.eye(len(both)), _names(k, both), _names(q, both))
        for kind in RESIDUAL_READS:
            read = registry.at(layer, kind)
            gain = getattr(block, READ_NORM[kind]).w.detach()
            cols = kept[read.name]
            if len(inputs):
                w = model.W_E.detach()[inputs][:, cols] * gain[cols]
                yield _Block("embed->read", w.T, lambda i: f"embed:{use.input_ids[i]}", _names(read, cols))
            if model.cfg.positional_embedding_type == "learned" and use.n_positions:
                w = model.W_pos.detach()[: use.n_positions][:, cols] * gain[cols]
                yield _Block("pos->read", w.T, lambda i: f"pos:{i}", _names(read, cols))
        if len(targets):
            for kind in RESIDUAL_WRITES:
                write = registry.at(layer, kind)
                rows = kept[write.name]
                w = model.W_U.detach()[rows][:, targets] * final_gain[rows, None]
                yield _Block("write->unembed", w.T, _names(write, rows), lambda i: f"unembed:{use.target_ids[i]}")
    if model.cfg.bigram_table and len(inputs) and len(targets):
        w = model.bigram.table.detach()[inputs][:, targets]
        yield _Block("bigram", w.T, lambda i: f"bigram:{use.input_ids[i]}", lambda i: f"unembed:{use.target_ids[i]}")


#: Edge kinds in the order reports list them.
EDGE_KINDS: tuple[str, ...] = (
    "embed->read", "pos->read", *(w.kind for w in BLOCK_WIRING), "q-k", "write->unembed", "bigram",
)


def count_edges(model: "HookedSparseTransformer", mask: NodeMask, use: EdgeUse) -> dict[str, int]:
    """Edges of the circuit ``mask`` by kind (every kind of :data:`EDGE_KINDS`, zeros included)."""
    counts = dict.fromkeys(EDGE_KINDS, 0)
    for block in _blocks(model, mask, use):
        counts[block.kind] += int((block.weights != 0).sum())
    return counts


def circuit_edges(model: "HookedSparseTransformer", mask: NodeMask, use: EdgeUse) -> list[Edge]:
    """Every edge with its weight, consistent with :func:`count_edges` kind by kind."""
    edges = []
    for block in _blocks(model, mask, use):
        for r, c in (block.weights != 0).nonzero().tolist():
            edges.append(Edge(block.kind, block.src(c), block.dst(r), float(block.weights[r, c])))
    return edges


def residual_links(model: "HookedSparseTransformer", mask: NodeMask) -> list[tuple[str, str]]:
    """``(write, read)`` node-name pairs joined by the residual stream's identity (not edges)."""
    registry = model.node_registry
    links: list[tuple[str, str]] = []
    writes: list[NodeSite] = []  # the sites that wrote to the residual stream before the current read
    for layer, block in enumerate(model.blocks):
        for read_kind, write_kind in zip(RESIDUAL_READS, RESIDUAL_WRITES):
            read = registry.at(layer, read_kind)
            seen = mask[read] & (getattr(block, READ_NORM[read_kind]).w.detach() != 0)
            for write in writes:
                for c in (mask[write] & seen).nonzero().flatten().tolist():
                    links.append((write.node(c).name, read.node(c).name))
            writes.append(registry.at(layer, write_kind))
    return links


def count_residual_links(model: "HookedSparseTransformer", mask: NodeMask) -> int:
    """How many :func:`residual_links` the circuit has."""
    return len(residual_links(model, mask))


def edge_use(task_batches: Sequence, target_ids: Sequence[int]) -> EdgeUse:
    """The :class:`EdgeUse` of a task from its batches (token ids of every prompt row)."""
    used: set[int] = set()
    n_positions = 0
    for batch in task_batches:
        for row, last in zip(batch.tokens, batch.read_pos.tolist()):
            used.update(row[: last + 1].tolist())
            n_positions = max(n_positions, last + 1)
    return EdgeUse(tuple(sorted(used)), tuple(sorted(set(int(t) for t in target_ids))), n_positions)
