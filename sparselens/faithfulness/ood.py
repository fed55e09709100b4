"""Check ``ood``: model and circuit on the task's out-of-distribution split (METHOD.md section 6).

Tasks that define ``split="ood"`` (IOI with same-gender names; ``bracket_counting`` with longer and
more rows than any other split; ``set_or_string_fixedvarname`` with ``set_or_string``'s varied
names; ``single_double_quote`` with longer strings; ``while_return_true`` with longer loops) get
``ood_loss_model``, ``ood_loss_circuit``, ``ood_acc_model`` and ``ood_acc_circuit`` on as many OOD
pairs as the report's test pairs. Run by default when the task has the split; asked for by name on a
task without one, it is an error.
"""

from __future__ import annotations

import torch

from sparselens.faithfulness.context import CheckResult, EvalContext
from sparselens.faithfulness.registry import register
from sparselens.interventions.reference import ReferenceRun


def has_ood(ctx: EvalContext) -> bool:
    return "ood" in ctx.task.splits


@register("ood", description="model vs circuit on the task's out-of-distribution split")
def ood(ctx: EvalContext) -> CheckResult:
    """Loss and accuracy of the model and the circuit on the task's ``ood`` split."""
    if not has_ood(ctx):
        raise ValueError(f"task {ctx.task.name!r} has no 'ood' split (its splits: {ctx.task.splits}); tasks with one: "
                         "ioi, bracket_counting, set_or_string_fixedvarname, single_double_quote, while_return_true")
    out = CheckResult()
    batch = ctx.task.batch(n=ctx.batch.n_pairs, split="ood", seed=ctx.seed).to(ctx.model.W_E.device)
    reference = ReferenceRun.of(ctx.model, batch)
    hooks = ctx.hooks(reference=reference)
    with torch.no_grad():
        circuit_logits = ctx.model.run_with_hooks(batch.tokens, fwd_hooks=hooks)
    m = out.metrics
    m["ood_loss_model"] = float(ctx.task.loss_from_logits(reference.logits, batch))
    m["ood_loss_circuit"] = float(ctx.task.loss_from_logits(circuit_logits, batch))
    m["ood_acc_model"] = float(ctx.task.accuracy_from_logits(reference.logits, batch))
    m["ood_acc_circuit"] = float(ctx.task.accuracy_from_logits(circuit_logits, batch))
    if m["ood_acc_circuit"] < m["ood_acc_model"] - 0.1:
        out.flags.append(f"Out of distribution the circuit is right on {m['ood_acc_circuit']:.0%} of prompts where the "
                         f"model is right on {m['ood_acc_model']:.0%} (loss {m['ood_loss_circuit']:.3f} vs "
                         f"{m['ood_loss_model']:.3f}): it does not generalise as the model does.")
    elif m["ood_acc_circuit"] > m["ood_acc_model"] + 0.1:
        out.flags.append(f"Out of distribution the circuit is right more often than the model ({m['ood_acc_circuit']:.0%} "
                         f"vs {m['ood_acc_model']:.0%}): it generalises differently from the model.")
    return out
