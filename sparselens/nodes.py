"""Nodes are data (DESIGN.md principle 2).

A :class:`NodeSite` is one hook point whose channels are nodes: per layer, the attention read, Q,
K, V, the attention write, the MLP read, the MLP neurons and the MLP write. A :class:`Node` is
(site, channel). :class:`NodeRegistry` derives every site from the config; masks, circuits and
plots are keyed by it and never rebuild hook names by hand.

Node names read ``L{layer}.{kind}[{channel}]``, and for Q/K/V ``L{layer}.{kind}[h{head},{channel}]``
with the channel counted within the head, e.g. ``L0.neuron[17]`` or ``L1.q[h2,5]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Optional, Union

import torch
from jaxtyping import Bool
from torch import Tensor

from sparselens.config import SparseTransformerConfig
from sparselens.errors import UnknownNameError
from sparselens.wiring import NodeKind


@dataclass(frozen=True)
class NodeSite:
    """A hook point whose channels are nodes.

    Attributes:
        layer: block index.
        kind: what the channels are.
        hook_name: full TransformerLens hook name, e.g. ``blocks.0.attn.hook_q``.
        channel_shape: trailing shape of the activation at the hook, e.g. ``(n_heads, d_head)``.
    """

    layer: int
    kind: NodeKind
    hook_name: str
    channel_shape: tuple[int, ...]

    @property
    def name(self) -> str:
        """Short name, e.g. ``L0.q``."""
        return f"L{self.layer}.{self.kind.value}"

    @property
    def n_nodes(self) -> int:
        return math.prod(self.channel_shape)

    def node(self, index: int) -> "Node":
        if not 0 <= index < self.n_nodes:
            raise IndexError(f"{self.name} has {self.n_nodes} nodes (0..{self.n_nodes - 1}); got index {index}")
        return Node(self, index)

    def __repr__(self) -> str:
        return f"NodeSite({self.name}, hook={self.hook_name!r}, n_nodes={self.n_nodes}, role={self.kind.role!r})"


@dataclass(frozen=True)
class Node:
    """One channel at one site. ``index`` is the flat channel index (head-major for Q/K/V)."""

    site: NodeSite
    index: int

    @property
    def name(self) -> str:
        if self.site.kind.is_head_channel:
            head, channel = divmod(self.index, self.site.channel_shape[-1])
            return f"{self.site.name}[h{head},{channel}]"
        return f"{self.site.name}[{self.index}]"

    @property
    def head(self) -> Optional[int]:
        """The head of a Q/K/V channel, else None."""
        return self.index // self.site.channel_shape[-1] if self.site.kind.is_head_channel else None

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Node({self.name})"


_NODE_RE = re.compile(r"^(?P<site>L\d+\.[a-z_]+)\[(?:h(?P<head>\d+),)?(?P<index>\d+)\]$")


class NodeRegistry:
    """Every node site of a model, derived from its config, in forward order.

    Examples:
        >>> reg = NodeRegistry(SparseTransformerConfig(n_layers=1, d_model=32, n_ctx=8, d_vocab=16))
        >>> [s.name for s in reg.sites]
        ['L0.attn_in', 'L0.q', 'L0.k', 'L0.v', 'L0.attn_out', 'L0.mlp_in', 'L0.neuron', 'L0.mlp_out']
        >>> reg.node("L0.q[h1,3]").index
        19
    """

    def __init__(self, cfg: SparseTransformerConfig):
        assert cfg.d_mlp is not None, "SparseTransformerConfig.__post_init__ sets d_mlp"
        shapes = {
            NodeKind.ATTN_IN: (cfg.d_model,),
            NodeKind.Q: (cfg.n_heads, cfg.d_head),
            NodeKind.K: (cfg.n_heads, cfg.d_head),
            NodeKind.V: (cfg.n_heads, cfg.d_head),
            NodeKind.ATTN_OUT: (cfg.d_model,),
            NodeKind.MLP_IN: (cfg.d_model,),
            NodeKind.NEURON: (cfg.d_mlp,),
            NodeKind.MLP_OUT: (cfg.d_model,),
        }
        self.sites: tuple[NodeSite, ...] = tuple(
            NodeSite(layer, kind, kind.hook_template.format(l=layer), shapes[kind])
            for layer in range(cfg.n_layers)
            for kind in NodeKind
        )
        self._by_name = {s.name: s for s in self.sites}
        self._by_hook = {s.hook_name: s for s in self.sites}
        self._by_position = {(s.layer, s.kind): s for s in self.sites}
        self.n_layers = cfg.n_layers

    def __iter__(self) -> Iterator[NodeSite]:
        return iter(self.sites)

    def __len__(self) -> int:
        return len(self.sites)

    @property
    def n_nodes(self) -> int:
        return sum(s.n_nodes for s in self.sites)

    def site(self, name: Union[str, NodeSite]) -> NodeSite:
        """Look a site up by short name (``L0.q``) or hook name (``blocks.0.attn.hook_q``)."""
        if isinstance(name, NodeSite):
            return self.site(name.name)
        site = self._by_name.get(name) or self._by_hook.get(name)
        if site is None:
            raise UnknownNameError("node site", name, list(self._by_name) + list(self._by_hook))
        return site

    def at(self, layer: int, kind: Union[NodeKind, str]) -> NodeSite:
        """The site of ``kind`` in block ``layer``, e.g. ``registry.at(0, NodeKind.Q)``."""
        site = self._by_position.get((layer, NodeKind(kind)))
        if site is None:
            raise IndexError(f"no node site {NodeKind(kind).value} in layer {layer}: the model has {self.n_layers} layers")
        return site

    def node(self, name: Union[str, Node]) -> Node:
        """Parse a node name such as ``L0.neuron[17]`` or ``L1.q[h2,5]``."""
        if isinstance(name, Node):
            return self.site(name.site.name).node(name.index)
        match = _NODE_RE.match(name.strip())
        if match is None:
            example = self.sites[0].node(0).name if self.sites else "L0.neuron[0]"
            raise UnknownNameError("node", name, [example, "L0.neuron[0]", "L0.q[h0,0]"])
        site = self.site(match["site"])
        index = int(match["index"])
        if match["head"] is not None:
            if not site.kind.is_head_channel:
                raise ValueError(f"node {name!r}: only Q/K/V nodes take a head (write {site.name}[{index}])")
            n_heads, d_head = site.channel_shape
            head = int(match["head"])
            if head >= n_heads or index >= d_head:
                raise IndexError(f"node {name!r}: {site.name} has {n_heads} heads of {d_head} channels")
            index = head * d_head + index
        elif site.kind.is_head_channel:
            raise ValueError(f"node {name!r}: Q/K/V nodes name their head, e.g. {site.node(0).name}")
        return site.node(index)

    def nodes(self) -> Iterator[Node]:
        """Every node of every site, in forward order."""
        for site in self.sites:
            for index in range(site.n_nodes):
                yield Node(site, index)


class NodeMask:
    """A keep (True) / drop (False) value for every node, one bool vector per site.

    Examples:
        >>> reg = NodeRegistry(SparseTransformerConfig(n_layers=1, d_model=32, n_ctx=8, d_vocab=16))
        >>> mask = NodeMask.full(reg).drop(["L0.neuron[3]", "L0.q[h0,1]"])
        >>> mask.n_kept, mask.n_total
        (286, 288)
    """

    def __init__(self, registry: NodeRegistry, keep: Mapping[str, Bool[Tensor, " n_nodes"]]):
        self.registry = registry
        self.keep: dict[str, torch.Tensor] = {}
        for site in registry.sites:
            if site.name not in keep:
                raise ValueError(f"NodeMask is missing site {site.name}; build it with NodeMask.full(registry)")
            vec = torch.as_tensor(keep[site.name]).to(torch.bool).flatten()
            if vec.numel() != site.n_nodes:
                raise ValueError(f"NodeMask for {site.name} has {vec.numel()} entries, expected {site.n_nodes}")
            self.keep[site.name] = vec
        extra = set(keep) - {s.name for s in registry.sites}
        if extra:
            registry.site(sorted(extra)[0])  # raises with a suggestion

    @classmethod
    def full(cls, registry: NodeRegistry, keep: bool = True) -> "NodeMask":
        """Every node kept (``keep=True``) or every node dropped."""
        fill = torch.ones if keep else torch.zeros
        return cls(registry, {s.name: fill(s.n_nodes, dtype=torch.bool) for s in registry.sites})

    @classmethod
    def from_nodes(cls, registry: NodeRegistry, nodes: Iterable[Union[str, Node]]) -> "NodeMask":
        """Keep exactly the given nodes."""
        return cls.full(registry, keep=False).keep_nodes(nodes)

    def _set(self, nodes: Iterable[Union[str, Node]], value: bool) -> "NodeMask":
        keep = {name: vec.clone() for name, vec in self.keep.items()}
        for node in nodes:
            node = self.registry.node(node)
            keep[node.site.name][node.index] = value
        return NodeMask(self.registry, keep)

    def keep_nodes(self, nodes: Iterable[Union[str, Node]]) -> "NodeMask":
        """A copy with the given nodes kept."""
        return self._set(nodes, True)

    def drop(self, nodes: Iterable[Union[str, Node]]) -> "NodeMask":
        """A copy with the given nodes dropped."""
        return self._set(nodes, False)

    def __getitem__(self, site: Union[str, NodeSite]) -> torch.Tensor:
        return self.keep[self.registry.site(site).name]

    @property
    def n_kept(self) -> int:
        return int(sum(int(v.sum()) for v in self.keep.values()))

    @property
    def n_total(self) -> int:
        return self.registry.n_nodes

    def kept_per_site(self) -> dict[str, int]:
        return {name: int(vec.sum()) for name, vec in self.keep.items()}

    def nodes(self) -> list[Node]:
        """The kept nodes, in forward order."""
        return [
            Node(site, int(i))
            for site in self.registry.sites
            for i in self.keep[site.name].nonzero().flatten().tolist()
        ]

    def __repr__(self) -> str:
        return f"NodeMask(kept {self.n_kept} of {self.n_total} nodes)"

    def _repr_html_(self) -> str:
        """Jupyter: kept of total nodes per layer and site."""
        from sparselens import html_tables

        totals = {site.name: site.n_nodes for site in self.registry.sites}
        return html_tables.heading(repr(self)) + html_tables.site_grid(self.kept_per_site(), totals)
