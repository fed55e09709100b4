"""Circuit: the nodes a pruning run kept, the edges between them, and how it was found.

A circuit is applied to its model as hook functions on the one forward pass: every node outside
the circuit is ablated (zero, mean or resample) at its node hook point, and with ``freeze_norms``
every RMSNorm scale is patched from the unpruned model's run on the same tokens (the
:class:`~sparselens.interventions.ReferenceRun`). What an edge is: :mod:`sparselens.prune.edges`.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from torch import Tensor

from sparselens import html_tables
from sparselens.files import write_text_atomic
from sparselens.interventions.ablation import Ablation, FwdHooks, circuit_hooks
from sparselens.interventions.reference import ReferenceRun
from sparselens.model.fingerprint import model_fingerprint
from sparselens.nodes import NodeMask
from sparselens.prune.edges import Edge, EdgeUse, circuit_edges, residual_links

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.tasks.base import Task, TaskBatch

SCHEMA = "sparselens.circuit"
SCHEMA_VERSION = 2


def circuit_loss(
    model: "HookedSparseTransformer", task: "Task", mask: Union[NodeMask, dict[str, Tensor]], batch: "TaskBatch",
    ablation: Union[str, Ablation], reference: Optional[ReferenceRun], means: Optional[dict[str, Tensor]] = None,
    freeze_norms: bool = False,
) -> float:
    """The task loss (per pair, averaged) of the circuit ``mask`` on ``batch``: the one evaluation path."""
    with torch.no_grad():
        hooks = circuit_hooks(model, mask, ablation, reference, means, freeze_norms)
        return float(task.loss_from_logits(model.run_with_hooks(batch.tokens, fwd_hooks=hooks), batch))


@dataclass
class Circuit:
    """A pruned circuit. Build one with :func:`sparselens.prune`; save and load with JSON.

    Attributes:
        kept: kept channel indices per node site, keyed by site name (``L0.neuron``).
        edge_counts: edges by kind (:mod:`sparselens.prune.edges` says exactly what counts);
            ``n_edges`` is their sum.
        residual_links: write -> later read pairs of the same residual channel (identity, not
            weights: not in ``n_edges``).
        task: the task's name.
        target_ids, input_ids, n_positions: the task's answer tokens, the tokens its prompts use and
            their length (what the embedding and unembedding edges count over).
        ablation: how nodes outside the circuit are replaced; freeze_norms: whether norm scales are frozen.
        losses: per-pair task losses on ``config["eval_pairs"]`` test pairs (``model``, ``circuit``,
            ``empty``), on validation pairs (``circuit_val``, ``model_val``), and the ``target``.
        model_fingerprint: hash of the model's config and weights.
        config: the :class:`~sparselens.prune.PruneConfig` it was found with, as a dict.
        means: per-site node means (for mean ablation), keyed by site name.
        curve: ``[step, train loss, nodes kept]`` every 10 mask-learning steps.
    """

    kept: dict[str, list[int]]
    edge_counts: dict[str, int]
    residual_links: int
    task: str
    target_ids: tuple[int, ...]
    input_ids: tuple[int, ...]
    n_positions: int
    ablation: str
    freeze_norms: bool
    losses: dict[str, float]
    model_fingerprint: str
    config: dict[str, Any] = field(default_factory=dict)
    means: Optional[dict[str, list[float]]] = None
    curve: list[list[float]] = field(default_factory=list)
    loss_split: str = "test"

    @property
    def n_nodes(self) -> int:
        return sum(len(v) for v in self.kept.values())

    @property
    def n_edges(self) -> int:
        return sum(self.edge_counts.values())

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def edge_use(self) -> EdgeUse:
        return EdgeUse(self.input_ids, self.target_ids, self.n_positions)

    def node_mask(self, model: "HookedSparseTransformer") -> NodeMask:
        self._check_model(model)
        return NodeMask.from_nodes(model.node_registry, [
            model.node_registry.site(site).node(i) for site, indices in self.kept.items() for i in indices
        ])

    def node_names(self, model: "HookedSparseTransformer") -> list[str]:
        return [n.name for n in self.node_mask(model).nodes()]

    def edges(self, model: "HookedSparseTransformer") -> list[Edge]:
        """Every edge with its weight (:mod:`sparselens.prune.edges` says what counts)."""
        return circuit_edges(model, self.node_mask(model), self.edge_use)

    def to_networkx(self, model: "HookedSparseTransformer", *, residual_links: bool = True) -> Any:
        """The circuit as a ``networkx.DiGraph``: nodes with site, layer, channel; edges with kind and
        weight (:mod:`sparselens.prune.graph`; its ``write_graphml`` and ``write_graph_json`` save it)."""
        from sparselens.prune.graph import circuit_graph

        return circuit_graph(self, model, residual_links=residual_links)

    def residual_link_pairs(self, model: "HookedSparseTransformer") -> list[tuple[str, str]]:
        """The ``(write, read)`` node pairs of :attr:`residual_links`."""
        return residual_links(model, self.node_mask(model))

    def _check_model(self, model: "HookedSparseTransformer") -> None:
        fp = model_fingerprint(model)
        if fp != self.model_fingerprint:
            raise ValueError(
                f"this circuit was found on a different model (fingerprint {self.model_fingerprint}, this "
                f"model's is {fp}); load the model it was pruned from"
            )

    def means_for(self, model: "HookedSparseTransformer") -> Optional[dict[str, Tensor]]:
        """The stored node means as tensors on the model's device (None unless mean ablation)."""
        if self.means is None:
            return None
        return {site: torch.tensor(values, device=model.W_E.device) for site, values in self.means.items()}

    def needs_reference(self) -> bool:
        """Whether running this circuit takes a :class:`ReferenceRun` (resample ablation, frozen norms)."""
        return Ablation.parse(self.ablation).needs == "resample" or self.freeze_norms

    def hooks(self, model: "HookedSparseTransformer", reference: Optional[ReferenceRun] = None) -> FwdHooks:
        """``fwd_hooks`` that run ``model`` as this circuit on ``reference``'s batch.

        ``reference = ReferenceRun.of(model, batch)`` is needed for resample ablation and frozen
        norms (:meth:`needs_reference`); build it once per batch and reuse it.
        """
        return circuit_hooks(model, self.node_mask(model), self.ablation, reference, self.means_for(model),
                             self.freeze_norms)

    def evaluate(self, model: "HookedSparseTransformer", task: "Task", split: str = "test",
                 n: Optional[int] = None, seed: Optional[int] = None) -> float:
        """The circuit's task loss (per pair, averaged) on ``n`` pairs of ``split``.

        The defaults (the circuit's ``eval_pairs`` and ``seed``) are the pairs its ``losses`` were
        measured on, so ``circuit.evaluate(model, task)`` equals ``circuit.losses["circuit"]``. For
        everything else a researcher should check about a circuit (KL, stochastic and adversarial
        ablation, node and attention fidelity), see :mod:`sparselens.faithfulness`.
        """
        n = int(self.config.get("eval_pairs", 128)) if n is None else n
        seed = self.seed if seed is None else seed
        batch = task.batch(n=n, split=split, seed=seed).to(model.W_E.device)
        reference = ReferenceRun.of(model, batch) if self.needs_reference() else None
        return circuit_loss(model, task, self.node_mask(model), batch, self.ablation, reference,
                            self.means_for(model), self.freeze_norms)

    # --------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, "n_nodes": self.n_nodes, "n_edges": self.n_edges,
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}}

    def save(self, path: Union[str, Path]) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

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
                f"{SCHEMA_VERSION} (version 2 changed what counts as an edge). Re-prune the circuit."
            )
        fields = {k: v for k, v in data.items() if k not in ("schema", "version", "n_nodes", "n_edges")}
        names = {f for f in cls.__dataclass_fields__}
        missing = sorted(names - set(fields) - {"config", "means", "curve", "loss_split"})
        unknown = sorted(set(fields) - names)
        if missing or unknown:
            raise ValueError(f"{path}: circuit fields missing {missing} / unknown {unknown}; the file is corrupt")
        for key in ("target_ids", "input_ids"):
            fields[key] = tuple(fields[key])
        return cls(**fields)

    def summary(self) -> str:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in self.losses.items())
        return (f"Circuit for {self.task!r}: {self.n_nodes} nodes, {self.n_edges} edges (+{self.residual_links} "
                f"residual links); {self.ablation} ablation{', frozen norms' if self.freeze_norms else ''}; "
                f"losses per pair ({self.config.get('eval_pairs', '?')} {self.loss_split} pairs): {losses}")

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        """Jupyter: size, losses, edges by kind and the kept nodes per layer and site."""
        rows = [("nodes", str(self.n_nodes)), ("edges", f"{self.n_edges} (+{self.residual_links} residual links)"),
                ("ablation", f"{self.ablation}, norms {'frozen' if self.freeze_norms else 'free'}")]
        n = self.config.get("eval_pairs", "?")
        rows += [(f"loss {k}", f"{v:.4f}") for k, v in self.losses.items()]
        edges = ", ".join(f"{kind} {count}" for kind, count in self.edge_counts.items() if count)
        return (html_tables.heading(f"Circuit for {self.task!r} (losses per pair on {n} {self.loss_split} pairs; *_val: validation)")
                + html_tables.key_values(rows)
                + f"<div style='font-size:12px;margin:4px 0'>edges by kind: {html.escape(edges) or 'none'}</div>"
                + html_tables.site_grid({site: len(kept) for site, kept in self.kept.items()}))
