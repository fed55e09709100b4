"""Checks ``stochastic`` and ``adversarial``: does the circuit still work when the rest is only partly ablated?

Every node outside the circuit becomes ``r * x + (1 - r) * A(x)`` (``A`` the circuit's ablation).

- ``stochastic`` (as parameter decomposition does): ``r ~ U(0, 1)``, and separately
  ``r ~ Bernoulli(1/2)``, drawn per node and per prompt; ``samples`` draws (default 16) of the task
  loss, reported as ``stochastic_uniform_loss_mean``/``_p95`` and ``stochastic_bernoulli_loss_mean``/``_p95``.
- ``adversarial``: ``r`` in [0, 1], ONE per node for the whole batch, by signed-gradient ascent on
  KL(model || circuit) at the read position, 20 steps of 0.1, from a random start and from zeros.
  ``adversarial_kl`` and ``adversarial_loss`` are the largest KL and task loss over every iterate of
  both runs; the zeros run starts at ``r = 0``, the plain ablation, so ``adversarial_loss >=
  loss_circuit`` and ``adversarial_kl >= kl_answer`` by construction.

A faithful circuit's loss barely moves under either.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from sparselens.faithfulness.context import CheckResult, EvalContext
from sparselens.faithfulness.registry import register
from sparselens.interventions.adversary import Adversary

STOCHASTIC_SAMPLES = 16
ADVERSARIAL_STEPS = 20
ADVERSARIAL_STEP = 0.1


def _draws(ctx: EvalContext, kind: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    rows = ctx.batch.tokens.shape[0]
    out = {}
    for site in ctx.model.node_sites:
        u = torch.rand(rows, site.n_nodes, generator=generator)
        out[site.name] = (u if kind == "uniform" else (u < 0.5).float()).to(ctx.model.W_E.device)
    return out


@register("stochastic", description="loss when the nodes outside the circuit are randomly partly restored")
def stochastic(ctx: EvalContext, samples: int = STOCHASTIC_SAMPLES) -> CheckResult:
    """Task loss with ``r ~ U(0, 1)`` and ``r ~ Bernoulli(1/2)`` per node and prompt: mean and 95th percentile."""
    out = CheckResult()
    gen = torch.Generator().manual_seed(ctx.seed + 101)
    bar = tqdm(total=2 * samples, desc="stochastic ablation", disable=not ctx.progress, leave=False)
    for kind in ("uniform", "bernoulli"):
        values = []
        for _ in range(samples):
            values.append(ctx.loss(ctx.logits(interpolation=_draws(ctx, kind, gen))))
            bar.update(1)
        out.metrics[f"stochastic_{kind}_loss_mean"] = float(np.mean(values))
        out.metrics[f"stochastic_{kind}_loss_p95"] = float(np.percentile(values, 95))
    bar.close()
    base = ctx.loss(ctx.circuit_run[0])
    worst = out.metrics["stochastic_uniform_loss_p95"]
    if worst > max(2 * base, base + 0.3):
        out.flags.append(f"With the nodes outside the circuit randomly partly restored (r ~ U(0, 1)), the circuit's "
                         f"loss rises from {base:.3f} to {out.metrics['stochastic_uniform_loss_mean']:.3f} on average "
                         f"({worst:.3f} at the 95th percentile): it works only when the rest is exactly ablated.")
    return out


@register("adversarial", description="the worst loss and KL an adversarial partial ablation (one r per node) reaches")
def adversarial(ctx: EvalContext, steps: int = ADVERSARIAL_STEPS, step_size: float = ADVERSARIAL_STEP) -> CheckResult:
    """Signed-gradient ascent on KL(model || circuit) over one ``r`` per node, from random and from zeros; the worse."""
    out = CheckResult()
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        runs = {}
        for start in tqdm(("random", "zeros"), desc="adversarial ablation", disable=not ctx.progress, leave=False):
            adversary = Adversary(ctx.model.node_registry, start, torch.Generator().manual_seed(ctx.seed + 202),
                                  ctx.model.W_E.device)
            runs[start] = adversary.ascend(ctx.model, ctx.mask, ctx.ablation, ctx.batch, ctx.reference,
                                           ctx.means_for(ctx.ablation), ctx.circuit.freeze_norms, steps, step_size, ctx.task)
    finally:
        for p in params:
            p.requires_grad_(True)
    history = runs["random"] + runs["zeros"]
    out.metrics["adversarial_kl"] = max(k for k, _ in history)
    out.metrics["adversarial_loss"] = max(loss for _, loss in history)
    out.metrics["adversarial_kl_from_zeros"] = max(k for k, _ in runs["zeros"])
    base = runs["zeros"][0][1]
    if out.metrics["adversarial_loss"] > max(2 * base, base + 0.3):
        out.flags.append(f"An adversary that partly restores the nodes outside the circuit (one r per node for the whole "
                         f"batch) raises its loss from {base:.3f} to {out.metrics['adversarial_loss']:.3f} (KL to the "
                         f"model {out.metrics['adversarial_kl']:.2f} nats): the circuit depends on how the rest is "
                         "ablated, not only on its own nodes.")
    return out
