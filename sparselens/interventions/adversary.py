"""An adversarial partial ablation (METHOD.md section 6): ``r`` per node, shared by the whole batch.

Every node outside a circuit becomes ``r * x + (1 - r) * A(x)`` (``A`` its plain ablation), with
``r`` in [0, 1] chosen to make the circuit as unlike the model as it can: signed-gradient ascent
``r <- clip(r + step * sign(grad KL(model || circuit)), 0, 1)`` on the KL at the read position.
One ``r`` per node for the whole batch, so it cannot fit noise per input. ``r = 0`` is the plain
ablation. The faithfulness suite runs it from a random start and from zeros; adversarial pruning
(``PruneConfig(ablation="adversarial")``) takes a few steps per batch while the mask is learned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import Tensor

from sparselens.divergence import kl
from sparselens.interventions.ablation import Ablation, circuit_hooks
from sparselens.interventions.reference import ReferenceRun
from sparselens.nodes import NodeMask, NodeRegistry
from sparselens.tasks.base import logits_at_read_pos

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.tasks.base import Task, TaskBatch


class Adversary:
    """``r`` [n_nodes] per site in [0, 1], moved by signed gradient ascent on KL(model || circuit).

    Args:
        registry: the model's node registry.
        start: ``"random"`` (U(0, 1)) or ``"zeros"`` (the plain ablation).
        generator: RNG for the random start.
    """

    def __init__(self, registry: NodeRegistry, start: str = "random", generator: Optional[torch.Generator] = None,
                 device: Union[str, torch.device] = "cpu"):
        if start not in ("random", "zeros"):
            raise ValueError(f"Adversary start must be 'random' or 'zeros', got {start!r}")
        self.registry = registry
        self.r = {site.name: (torch.rand(site.n_nodes, generator=generator) if start == "random"
                              else torch.zeros(site.n_nodes)).to(device) for site in registry.sites}

    def kl_and_logits(self, model: "HookedSparseTransformer", mask: Union[NodeMask, dict[str, Tensor]], ablation: Ablation,
                      batch: "TaskBatch", reference: ReferenceRun, means: Optional[dict[str, Tensor]], freeze_norms: bool,
                      r: Optional[dict[str, Tensor]] = None) -> tuple[Tensor, Tensor]:
        """Mean KL(model || circuit) over the batch's read positions (a 0-d tensor) and the circuit's logits."""
        hooks = circuit_hooks(model, mask, ablation.base, reference, means, freeze_norms,
                              interpolation=self.r if r is None else r)
        logits = model.run_with_hooks(batch.tokens, fwd_hooks=hooks)
        return kl(logits_at_read_pos(reference.logits, batch), logits_at_read_pos(logits, batch)).mean(), logits

    def ascend(self, model: "HookedSparseTransformer", mask: Union[NodeMask, dict[str, Tensor]], ablation: Ablation,
               batch: "TaskBatch", reference: ReferenceRun, means: Optional[dict[str, Tensor]], freeze_norms: bool,
               steps: int, step_size: float, task: Optional["Task"] = None) -> list[tuple[float, float]]:
        """``steps`` signed-gradient steps on ``r``; returns ``(KL, task loss)`` at every iterate, the start included
        (the task loss is NaN without ``task``). The model's parameters should not require gradients."""
        history = []
        mask = {name: (v.detach() if isinstance(v, Tensor) else v) for name, v in
                (mask.keep.items() if isinstance(mask, NodeMask) else mask.items())}
        for i in range(steps + 1):
            r = {name: value.clone().requires_grad_(i < steps) for name, value in self.r.items()}
            with torch.enable_grad() if i < steps else torch.no_grad():
                divergence, logits = self.kl_and_logits(model, mask, ablation, batch, reference, means, freeze_norms, r)
                loss = float(task.loss_from_logits(logits.detach(), batch)) if task is not None else float("nan")
                history.append((float(divergence.detach()), loss))
                if i == steps:
                    break
                grads = torch.autograd.grad(divergence, list(r.values()), allow_unused=True)
            with torch.no_grad():
                for (name, value), grad in zip(r.items(), grads):
                    if grad is not None:
                        self.r[name] = (value.detach() + step_size * grad.sign()).clamp_(0.0, 1.0)
        return history
