"""The wiring of a block, as data (DESIGN.md, "Wiring as data").

Every block has the same eight node sites (:class:`NodeKind`) and the same weights between them.
:data:`BLOCK_WIRING` says which site reads which through which weight; edge counting
(:mod:`sparselens.prune.edges`), the sparsifier's floor directions
(:mod:`sparselens.train.sparsifier`) and the node registry read it from here, so nobody
re-describes the block by hand.

Residual reads (``attn_in``, ``mlp_in``) see the residual stream through a norm (:data:`READ_NORM`);
residual writes (``attn_out``, ``mlp_out``) add to it. Between a write and a later read of the same
channel there is no weight, only the residual stream's identity; those links are counted apart
from edges. Q and K meet in the attention scores, channel by channel within a head
(:data:`QK_PAIR`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class NodeKind(str, Enum):
    """What a site's channels are, in forward order within a block; the value is the short name."""

    ATTN_IN = "attn_in"
    Q = "q"
    K = "k"
    V = "v"
    ATTN_OUT = "attn_out"
    MLP_IN = "mlp_in"
    NEURON = "neuron"
    MLP_OUT = "mlp_out"

    @property
    def role(self) -> str:
        """``"residual read"``, ``"residual write"``, ``"neuron"`` or ``"Q"``/``"K"``/``"V"``."""
        if self in RESIDUAL_READS:
            return "residual read"
        if self in RESIDUAL_WRITES:
            return "residual write"
        return "neuron" if self is NodeKind.NEURON else self.value.upper()

    @property
    def is_head_channel(self) -> bool:
        return self in (NodeKind.Q, NodeKind.K, NodeKind.V)

    @property
    def hook_template(self) -> str:
        """The hook name with ``{l}`` for the layer, e.g. ``blocks.{l}.attn.hook_q``."""
        return _HOOK_TEMPLATES[self]


_HOOK_TEMPLATES = {
    NodeKind.ATTN_IN: "blocks.{l}.hook_attn_in",
    NodeKind.Q: "blocks.{l}.attn.hook_q",
    NodeKind.K: "blocks.{l}.attn.hook_k",
    NodeKind.V: "blocks.{l}.attn.hook_v",
    NodeKind.ATTN_OUT: "blocks.{l}.hook_attn_out",
    NodeKind.MLP_IN: "blocks.{l}.hook_mlp_in",
    NodeKind.NEURON: "blocks.{l}.mlp.hook_post",
    NodeKind.MLP_OUT: "blocks.{l}.hook_mlp_out",
}

#: residual read -> the block's norm in front of it (its gain ``w`` scales what the read sees)
READ_NORM = {NodeKind.ATTN_IN: "ln1", NodeKind.MLP_IN: "ln2"}
RESIDUAL_READS = tuple(READ_NORM)
#: residual writes, in forward order within a block
RESIDUAL_WRITES = (NodeKind.ATTN_OUT, NodeKind.MLP_OUT)
#: Q and K channels meet in the attention scores: ``q[h, c] * k[h, c]`` summed over ``c``
QK_PAIR = (NodeKind.Q, NodeKind.K)


@dataclass(frozen=True)
class Wire:
    """A weight matrix of a block, from the node site it reads to the node site it writes.

    Attributes:
        src: the site the weight reads (the matrix's columns).
        dst: the site the weight writes (the matrix's rows).
        param: the parameter's name within a block, in ``F.linear`` layout ``[dst, src]``.
    """

    src: NodeKind
    dst: NodeKind
    param: str

    @property
    def kind(self) -> str:
        """The edge kind of this weight's entries, e.g. ``"attn_in->q"``."""
        return f"{self.src.value}->{self.dst.value}"

    @property
    def floor_dim(self) -> int:
        """Which slices the sparsifier's floor protects: 0 (rows) when the weight reads the
        residual stream (a channel's or neuron's reads), 1 (columns) when it writes it (a
        channel's or neuron's writes). Either way the floor protects the non-residual end."""
        return 0 if self.src in RESIDUAL_READS else 1


#: Every weight between node sites of one block.
BLOCK_WIRING: tuple[Wire, ...] = (
    Wire(NodeKind.ATTN_IN, NodeKind.Q, "attn.q_proj.weight"),
    Wire(NodeKind.ATTN_IN, NodeKind.K, "attn.k_proj.weight"),
    Wire(NodeKind.ATTN_IN, NodeKind.V, "attn.v_proj.weight"),
    Wire(NodeKind.V, NodeKind.ATTN_OUT, "attn.o_proj.weight"),
    Wire(NodeKind.MLP_IN, NodeKind.NEURON, "mlp.fc_in.weight"),
    Wire(NodeKind.NEURON, NodeKind.MLP_OUT, "mlp.fc_out.weight"),
)
