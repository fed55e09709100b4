"""What every faithfulness check reads: the circuit, its task batch, and the model's run on it, built once.

:class:`EvalContext` holds the test batch, the full model's :class:`ReferenceRun` on it (logits,
node activations, attention patterns and sinks, norm scales: one forward) and, computed on first
use, the circuit's own run on it (one forward under the circuit's hooks). Checks run further
forwards only for what they change (an ablation, an interpolation ``r``, a mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from sparselens.divergence import kl
from sparselens.interventions.ablation import Ablation, FwdHooks, circuit_hooks
from sparselens.interventions.reference import ReferenceRun
from sparselens.nodes import NodeMask
from sparselens.tasks.base import logits_at_read_pos

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.prune.circuit import Circuit
    from sparselens.tasks.base import Task, TaskBatch


@dataclass
class CheckResult:
    """What one check adds to a report.

    Attributes:
        metrics: flat name -> value (NaN where undefined, with a note saying why).
        nodes: node name -> fields (merged across checks into the report's ``nodes``).
        heads: head name (``L0H3``) -> fields.
        flags: sentences a researcher should read first.
        notes: what a metric could not be computed from, and other caveats.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class EvalContext:
    """A circuit, its task, and the test batch with the full model's reference run on it.

    Attributes:
        model, circuit, task: what is evaluated.
        batch: ``n_pairs`` test pairs (``[2n, pos]`` tokens) on the model's device.
        reference: the full model's run on ``batch``.
        mask: the circuit's kept nodes.
        ablation: how nodes outside the circuit are replaced (the circuit's plain ablation).
        means: node means for mean ablation (the circuit's own, else the model's pretraining means).
        seed: seeds every random draw of the checks.
        progress: show progress bars.
    """

    model: "HookedSparseTransformer"
    circuit: "Circuit"
    task: "Task"
    batch: "TaskBatch"
    reference: ReferenceRun
    mask: NodeMask
    ablation: Ablation
    means: Optional[dict[str, Tensor]]
    seed: int = 0
    progress: bool = True
    _means_error: Optional[str] = None

    @classmethod
    def build(cls, model: "HookedSparseTransformer", circuit: "Circuit", task: "Task", n_pairs: int, seed: int,
              progress: bool) -> "EvalContext":
        """Check that the circuit belongs to ``model`` and ``task``, draw the test batch, run the model once."""
        if circuit.task != task.name:
            raise ValueError(f"the circuit was pruned on task {circuit.task!r}, not {task.name!r}; pass that task")
        mask = circuit.node_mask(model)  # raises for a circuit of another model
        batch = task.batch(n=n_pairs, split="test", seed=seed).to(model.W_E.device)
        reference = ReferenceRun.of(model, batch)
        if not torch.isfinite(reference.logits).all():
            raise ValueError("the model's logits on the task's test prompts contain NaN or inf; the model is broken "
                             "(check its weights) and no faithfulness metric would mean anything")
        means, error = circuit.means_for(model), None
        if means is None:
            from sparselens.interventions.means import pretraining_means

            try:
                means = pretraining_means(model, progress=progress)
            except ValueError as err:  # the model does not say what it was trained on
                error = str(err)
        return cls(model, circuit, task, batch, reference, mask, Ablation.parse(circuit.ablation), means, seed,
                   progress, error)

    # ------------------------------------------------------------------ runs
    def hooks(self, mask: Optional[Union[NodeMask, dict[str, Tensor]]] = None, ablation: Optional[Ablation] = None,
              interpolation: Optional[dict[str, Tensor]] = None, reference: Optional[ReferenceRun] = None) -> FwdHooks:
        """Hooks that run the model as ``mask`` (default the circuit) with ``ablation`` (default the circuit's)
        on ``reference``'s batch (default the test batch)."""
        ablation = (ablation or self.ablation).base
        means = self.means_for(ablation)
        return circuit_hooks(self.model, self.mask if mask is None else mask, ablation,
                             self.reference if reference is None else reference, means, self.circuit.freeze_norms,
                             interpolation)

    def means_for(self, ablation: Ablation) -> Optional[dict[str, Tensor]]:
        """The means ``ablation`` needs, or a ValueError saying why there are none."""
        if ablation.needs != "means":
            return None
        if self.means is None:
            raise ValueError(self._means_error or "no node means for mean ablation")
        return self.means

    @torch.no_grad()
    def logits(self, **hooks_kwargs: Any) -> Float[Tensor, "row pos d_vocab"]:
        """Logits of the model run as :meth:`hooks` describes."""
        return self.model.run_with_hooks(self.batch.tokens, fwd_hooks=self.hooks(**hooks_kwargs))

    @cached_property
    def circuit_run(self) -> tuple[Float[Tensor, "row pos d_vocab"], dict[str, Tensor]]:
        """The circuit's logits and activations (node sites, patterns, sinks), from one forward."""
        wanted = set(self.reference.activations)
        with torch.no_grad(), self.model.hooks(fwd_hooks=self.hooks()):
            logits, cache = self.model.run_with_cache(self.batch.tokens, names_filter=lambda n: n in wanted)
        return logits, dict(cache.cache_dict)

    # ------------------------------------------------------------------ measures
    def loss(self, logits: Float[Tensor, "row pos d_vocab"]) -> float:
        """The task loss per pair (averaged over the pair), on this batch."""
        return float(self.task.loss_from_logits(logits, self.batch))

    def at_read(self, logits: Float[Tensor, "row pos d_vocab"]) -> Float[Tensor, "row d_vocab"]:
        return logits_at_read_pos(logits, self.batch)

    def kl_read(self, logits: Float[Tensor, "row pos d_vocab"]) -> float:
        """Mean KL(model || this run) over the full vocabulary at each prompt's read position."""
        return float(kl(self.at_read(self.reference.logits), self.at_read(logits)).mean())

    @cached_property
    def valid(self) -> Bool[Tensor, "row pos"]:
        """Positions up to each prompt's read position (the rest is padding)."""
        pos = torch.arange(self.batch.tokens.shape[1], device=self.batch.tokens.device)
        return pos[None, :] <= self.batch.read_pos.to(pos.device)[:, None]

    def kl_all(self, logits: Float[Tensor, "row pos d_vocab"]) -> float:
        """Mean KL(model || this run) over every prompt position (padding excluded)."""
        per = kl(self.reference.logits, logits)
        return float(per[self.valid].mean())


def nan_with_note(result: CheckResult, metric: str, why: str) -> None:
    """Record ``metric`` as NaN, and why."""
    result.metrics[metric] = math.nan
    result.notes.append(f"{metric} is NaN: {why}")
