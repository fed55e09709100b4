"""Circuit: the nodes a pruning run kept, the edges between them, and how it was found.

A circuit is applied to its model as hook functions on the one forward pass: every node outside
the circuit is ablated (zero, mean or resample) at its node hook point, and with ``freeze_norms``
every RMSNorm scale is patched from the unpruned model's run on the same tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from jaxtyping import Int
from torch import Tensor

from sparselens.interventions.ablation import Ablation, FwdHooks, ablation_hooks, freeze_norm_hooks
from sparselens.model.checkpoint import model_fingerprint
from sparselens.nodes import NodeMask

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

SCHEMA = "sparselens.circuit"
SCHEMA_VERSION = 1


def circuit_hooks(
    model: "HookedSparseTransformer",
    mask: Union[NodeMask, dict[str, Tensor]],
    ablation: Union[str, Ablation],
    tokens: Optional[Int[Tensor, "batch pos"]] = None,
    means: Optional[dict[str, Tensor]] = None,
    freeze_norms: bool = False,
) -> FwdHooks:
    """``fwd_hooks`` that run ``model`` as the circuit ``mask`` on ``tokens``.

    ``tokens`` is needed for resample ablation (each prompt takes the activations of the next
    prompt in the batch, cyclically) and for frozen norms (the unpruned model's scales on the
    same tokens).
    """
    ablation = Ablation.parse(ablation)
    need_tokens = ablation is Ablation.RESAMPLE or freeze_norms
    if need_tokens and tokens is None:
        raise ValueError("resample ablation and frozen norms need the tokens the circuit will run on")
    resample_cache = None
    if ablation is Ablation.RESAMPLE:
        with torch.no_grad():
            _, resample_cache = model.run_with_cache(
                tokens.roll(1, dims=0), names_filter=lambda n: n in {s.hook_name for s in model.node_sites},
                return_type=None,
            )
    hooks = ablation_hooks(model, mask, ablation, means=means, resample_cache=resample_cache)
    if freeze_norms:
        with torch.no_grad():
            _, scales = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_scale"), return_type=None)
        hooks += freeze_norm_hooks(scales)
    return hooks


def count_edges(model: "HookedSparseTransformer", mask: NodeMask, target_ids: tuple[int, ...] = ()) -> dict[str, int]:
    """Edges of a circuit, by type. An edge is a nonzero weight entry whose two ends are kept nodes:

    - ``read->qkv``: ``q_proj/k_proj/v_proj.weight[j, i] != 0`` for kept residual read ``Ll.attn_in[i]``
      and kept ``Ll.q/k/v`` channel ``j``.
    - ``v->write``: ``o_proj.weight[o, j] != 0`` for kept V channel ``j`` (through its head's
      attention) and kept ``Ll.attn_out[o]``. (Q and K meet in the attention pattern, not through
      a weight, so they have no edge to the write.)
    - ``read->neuron``: ``fc_in.weight[j, i] != 0`` for kept ``Ll.mlp_in[i]`` and ``Ll.neuron[j]``.
    - ``neuron->write``: ``fc_out.weight[o, j] != 0`` for kept ``Ll.neuron[j]`` and ``Ll.mlp_out[o]``.
    - ``residual``: a kept write of residual channel ``c`` (``attn_out`` or ``mlp_out``) and a kept
      read of the same channel later in the forward (``attn_in``/``mlp_in``), when the reading
      norm's weight ``w[c] != 0``.
    - ``embed->read``: a kept read of channel ``c`` with ``W_E[:, c]`` not all zero (one edge per
      read node) and that reading norm's ``w[c] != 0``.
    - ``write->unembed``: a kept write of channel ``c`` and a target token ``t`` of the task with
      ``W_U[c, t] != 0`` and ``ln_final.w[c] != 0``.
    """
    counts = dict.fromkeys(["read->qkv", "v->write", "read->neuron", "neuron->write", "residual",
                            "embed->read", "write->unembed"], 0)

    def nnz(weight: Tensor, rows: Tensor, cols: Tensor) -> int:
        return int((weight.detach()[rows][:, cols] != 0).sum())

    embed_used = (model.W_E.detach() != 0).any(dim=0)
    writes: list[Tensor] = []  # kept write channels so far, in forward order
    for l, block in enumerate(model.blocks):
        keep = {kind: mask[f"L{l}.{kind}"] for kind in ("attn_in", "q", "k", "v", "attn_out", "mlp_in", "neuron", "mlp_out")}
        for kind, proj in (("q", block.attn.q_proj), ("k", block.attn.k_proj), ("v", block.attn.v_proj)):
            counts["read->qkv"] += nnz(proj.weight, keep[kind], keep["attn_in"])
        counts["v->write"] += nnz(block.attn.o_proj.weight, keep["attn_out"], keep["v"])
        counts["read->neuron"] += nnz(block.mlp.fc_in.weight, keep["neuron"], keep["mlp_in"])
        counts["neuron->write"] += nnz(block.mlp.fc_out.weight, keep["mlp_out"], keep["neuron"])
        for read_kind, norm in (("attn_in", block.ln1), ("mlp_in", block.ln2)):
            read = keep[read_kind] & (norm.w.detach() != 0)
            counts["residual"] += sum(int((w & read).sum()) for w in writes)
            counts["embed->read"] += int((read & embed_used).sum())
            writes.append(keep["attn_out"] if read_kind == "attn_in" else keep["mlp_out"])
    final = model.ln_final.w.detach() != 0
    for t in target_ids:
        unembed = (model.W_U.detach()[:, t] != 0) & final
        counts["write->unembed"] += sum(int((w & unembed).sum()) for w in writes)
    return counts


@dataclass(frozen=True)
class Edge:
    """One edge of a circuit: ``kind`` as in :func:`count_edges`, its two ends, and its weight.

    ``src`` is a node name or ``"embed"``; ``dst`` a node name or ``"unembed:{token_id}"``. For
    residual and embedding edges the weight is the reading norm's gain ``w[c]``; for unembedding
    edges ``W_U[c, t] * ln_final.w[c]``; otherwise the weight entry itself.
    """

    kind: str
    src: str
    dst: str
    weight: float


def circuit_edges(model: "HookedSparseTransformer", mask: NodeMask, target_ids: tuple[int, ...] = ()) -> list[Edge]:
    """Every edge of a circuit (the definition of :func:`count_edges`, enumerated with weights)."""
    edges: list[Edge] = []
    registry = model.node_registry

    def name(site: str, index: int) -> str:
        return registry.site(site).node(index).name

    def linear(kind: str, weight: Tensor, dst_site: str, src_site: str) -> None:
        w = weight.detach()
        rows, cols = mask[dst_site].nonzero().flatten(), mask[src_site].nonzero().flatten()
        sub = w[rows][:, cols]
        for r, c in (sub != 0).nonzero().tolist():
            edges.append(Edge(kind, name(src_site, int(cols[c])), name(dst_site, int(rows[r])), float(sub[r, c])))

    embed_used = (model.W_E.detach() != 0).any(dim=0)
    writes: list[str] = []
    for l, block in enumerate(model.blocks):
        for kind, proj in (("q", block.attn.q_proj), ("k", block.attn.k_proj), ("v", block.attn.v_proj)):
            linear("read->qkv", proj.weight, f"L{l}.{kind}", f"L{l}.attn_in")
        linear("v->write", block.attn.o_proj.weight, f"L{l}.attn_out", f"L{l}.v")
        linear("read->neuron", block.mlp.fc_in.weight, f"L{l}.neuron", f"L{l}.mlp_in")
        linear("neuron->write", block.mlp.fc_out.weight, f"L{l}.mlp_out", f"L{l}.neuron")
        for read_kind, norm, write_kind in (("attn_in", block.ln1, "attn_out"), ("mlp_in", block.ln2, "mlp_out")):
            gain = norm.w.detach()
            for c in (mask[f"L{l}.{read_kind}"] & (gain != 0)).nonzero().flatten().tolist():
                for write in writes:
                    if mask[write][c]:
                        edges.append(Edge("residual", name(write, c), name(f"L{l}.{read_kind}", c), float(gain[c])))
                if embed_used[c]:
                    edges.append(Edge("embed->read", "embed", name(f"L{l}.{read_kind}", c), float(gain[c])))
            writes.append(f"L{l}.{write_kind}")
    final = model.ln_final.w.detach()
    for t in target_ids:
        column = model.W_U.detach()[:, t] * final
        for write in writes:
            for c in (mask[write] & (column != 0)).nonzero().flatten().tolist():
                edges.append(Edge("write->unembed", name(write, c), f"unembed:{t}", float(column[c])))
    return edges


@dataclass
class Circuit:
    """A pruned circuit. Build one with :func:`sparselens.prune`; save and load with JSON.

    Attributes:
        kept: kept channel indices per node site, keyed by site name (``L0.neuron``).
        edge_counts: edges by type (see :func:`count_edges` for exactly what counts).
        task: the task's name; target_ids: the task's target token ids (for unembedding edges).
        ablation: how nodes outside the circuit are replaced; freeze_norms: whether norm scales are frozen.
        losses: task losses reached (``model``, ``circuit``, ``empty``) on ``loss_split``, and the target.
        means: per-site node means (for mean ablation), keyed by site name.
        model_fingerprint: hash of the model's config and weights.
        seed, hyperparameters: how it was found.
    """

    kept: dict[str, list[int]]
    edge_counts: dict[str, int]
    task: str
    target_ids: tuple[int, ...]
    ablation: str
    freeze_norms: bool
    losses: dict[str, float]
    model_fingerprint: str
    seed: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    means: Optional[dict[str, list[float]]] = None
    loss_split: str = "test"

    @property
    def n_nodes(self) -> int:
        return sum(len(v) for v in self.kept.values())

    @property
    def n_edges(self) -> int:
        return sum(self.edge_counts.values())

    def node_mask(self, model: "HookedSparseTransformer") -> NodeMask:
        self._check_model(model)
        return NodeMask.from_nodes(model.node_registry, [
            model.node_registry.site(site).node(i) for site, indices in self.kept.items() for i in indices
        ])

    def node_names(self, model: "HookedSparseTransformer") -> list[str]:
        return [n.name for n in self.node_mask(model).nodes()]

    def edges(self, model: "HookedSparseTransformer") -> list[Edge]:
        """Every edge with its weight (see :func:`count_edges` for what counts)."""
        return circuit_edges(model, self.node_mask(model), self.target_ids)

    def _check_model(self, model: "HookedSparseTransformer") -> None:
        fp = model_fingerprint(model)
        if fp != self.model_fingerprint:
            raise ValueError(
                f"this circuit was found on a different model (fingerprint {self.model_fingerprint}, this "
                f"model's is {fp}); load the model it was pruned from"
            )

    def _means(self, model: "HookedSparseTransformer") -> Optional[dict[str, Tensor]]:
        if self.means is None:
            return None
        return {site: torch.tensor(values, device=model.W_E.device) for site, values in self.means.items()}

    def hooks(self, model: "HookedSparseTransformer", tokens: Optional[Tensor] = None) -> FwdHooks:
        """``fwd_hooks`` that run ``model`` as this circuit (``tokens`` needed for resample/frozen norms)."""
        return circuit_hooks(model, self.node_mask(model), self.ablation, tokens, self._means(model), self.freeze_norms)

    @torch.no_grad()
    def evaluate(self, model: "HookedSparseTransformer", task: Any, split: str = "test", n: int = 64, seed: int = 0) -> float:
        """The circuit's task loss (per pair, averaged) on ``n`` pairs of ``split``."""
        batch = task.batch(n=n, split=split, seed=seed).to(model.W_E.device)
        logits = model.run_with_hooks(batch.tokens, fwd_hooks=self.hooks(model, batch.tokens))
        return float(task.loss_from_logits(logits, batch))

    def show(self, model: "HookedSparseTransformer", task: Any = None, **kwargs: Any) -> Any:
        """The interactive circuit viewer, rendered inline in Jupyter (works offline).

        Returns a :class:`sparselens.viz.viewer.CircuitView`; ``kwargs`` go to
        :func:`sparselens.viz.viewer.viewer_data` (``n_prompts``, ``corpus_tokens``, ``selected``, ...).
        ``.save(path)`` writes the same page as ``sparselens view``.
        """
        from sparselens.viz.viewer import CircuitView, viewer_data

        return CircuitView(viewer_data(model, self, task, **kwargs))

    # --------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, "n_nodes": self.n_nodes, "n_edges": self.n_edges,
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}}

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Circuit":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no circuit file at {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); the circuit file is corrupt or truncated") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"{path} is not a sparselens circuit (no 'schema': '{SCHEMA}')")
        if data.get("version") != SCHEMA_VERSION:
            raise ValueError(
                f"{path} is circuit schema version {data.get('version')}; this sparselens reads version "
                f"{SCHEMA_VERSION}. Upgrade sparselens or re-prune."
            )
        fields = {k: v for k, v in data.items() if k not in ("schema", "version", "n_nodes", "n_edges")}
        fields["target_ids"] = tuple(fields["target_ids"])
        return cls(**fields)

    def summary(self) -> str:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in self.losses.items())
        return (f"Circuit for {self.task!r}: {self.n_nodes} nodes, {self.n_edges} edges; {self.ablation} ablation"
                f"{', frozen norms' if self.freeze_norms else ''}; losses ({self.loss_split}): {losses}")

    def __repr__(self) -> str:
        return self.summary()
