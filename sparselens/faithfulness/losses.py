"""Check ``losses``: the circuit against the model and the empty circuit (METHOD.md section 6).

Metrics (task losses per pair on the test batch; KL in nats, exact over the full vocabulary):

- ``loss_model``, ``loss_circuit``, ``loss_empty`` (every node ablated the circuit's way);
- ``faithfulness = (loss_empty - loss_circuit) / (loss_empty - loss_model)`` (MIB's form with the
  loss as metric: 1 for a circuit as good as the model, 0 for one as good as nothing); NaN, with a
  flag, when ``|loss_empty - loss_model| < 0.05`` (the empty circuit already does the task);
- ``kl_answer``: mean KL(model || circuit) at the read position; ``kl_all``: over every position;
- ``argmax_agreement``: share of prompts whose most likely next token (full vocabulary) is the same;
- ``loss_under_<a>`` for every plain ablation ``a`` the circuit was not pruned with: the same
  circuit with its outside replaced the other way.
"""

from __future__ import annotations

from sparselens.faithfulness.context import CheckResult, EvalContext, nan_with_note
from sparselens.faithfulness.registry import register
from sparselens.interventions.ablation import Ablation
from sparselens.nodes import NodeMask

#: below this gap between the empty circuit and the model, normalised faithfulness is undefined
MIN_FAITHFULNESS_GAP = 0.05
PLAIN = (Ablation.ZERO, Ablation.MEAN, Ablation.RESAMPLE)


def normalised_faithfulness(loss_empty: float, loss_circuit: float, loss_model: float) -> float:
    """``(L(0) - L(C)) / (L(0) - L(M))``; NaN when the denominator is below :data:`MIN_FAITHFULNESS_GAP`."""
    gap = loss_empty - loss_model
    return float("nan") if abs(gap) < MIN_FAITHFULNESS_GAP else (loss_empty - loss_circuit) / gap


@register("losses", description="losses of model, circuit and empty circuit; faithfulness, KL, argmax agreement; other ablations")
def losses(ctx: EvalContext) -> CheckResult:
    """Losses of model, circuit and empty circuit; normalised faithfulness, KL, argmax agreement, other ablations."""
    out = CheckResult()
    circuit_logits, _ = ctx.circuit_run
    empty = NodeMask.full(ctx.model.node_registry, keep=False)
    m = out.metrics
    m["loss_model"] = ctx.loss(ctx.reference.logits)
    m["loss_circuit"] = ctx.loss(circuit_logits)
    m["loss_empty"] = ctx.loss(ctx.logits(mask=empty))
    m["faithfulness"] = normalised_faithfulness(m["loss_empty"], m["loss_circuit"], m["loss_model"])
    if m["faithfulness"] != m["faithfulness"]:
        out.flags.append(f"Normalised faithfulness is undefined: the empty circuit's loss ({m['loss_empty']:.3f}) is "
                         f"within {MIN_FAITHFULNESS_GAP} of the model's ({m['loss_model']:.3f}); the task barely needs "
                         "the nodes at all, so a small circuit here says little.")
    elif m["faithfulness"] < 0.8:
        out.flags.append(f"The circuit recovers only {m['faithfulness']:.0%} of the model's loss reduction over the "
                         f"empty circuit (faithfulness {m['faithfulness']:.2f}).")
    m["kl_answer"] = ctx.kl_read(circuit_logits)
    m["kl_all"] = ctx.kl_all(circuit_logits)
    agree = ctx.at_read(circuit_logits).argmax(-1) == ctx.at_read(ctx.reference.logits).argmax(-1)
    m["argmax_agreement"] = float(agree.float().mean())
    if m["kl_answer"] > 0.5:
        out.flags.append(f"At the read position the circuit's next-token distribution is far from the model's "
                         f"(KL {m['kl_answer']:.2f} nats over the full vocabulary; the two agree on the most likely "
                         f"token for {m['argmax_agreement']:.0%} of prompts): it does the binary task, not what the "
                         "model does there.")
    for other in PLAIN:
        if other is ctx.ablation:
            continue
        key = f"loss_under_{other.value}"
        try:
            m[key] = ctx.loss(ctx.logits(ablation=other))
        except ValueError as err:
            nan_with_note(out, key, str(err))
            continue
        if m[key] > max(2 * m["loss_circuit"], m["loss_circuit"] + 0.3):
            out.flags.append(f"Under {other.value} ablation the same nodes reach a loss of {m[key]:.3f} "
                             f"(pruned with {ctx.ablation.value}: {m['loss_circuit']:.3f}): the circuit relies on "
                             f"the {ctx.ablation.value} values of the nodes it drops.")
    return out
