"""The faithfulness suite: tell a researcher, in one call, when a circuit is not what the model does.

    >>> report = sparselens.faithfulness.evaluate(model, circuit, task)     # doctest: +SKIP
    >>> report.flags                       # sentences to read first
    >>> report.metrics["adversarial_loss"], report.nodes["L0.neuron[17]"], report.heads["L1H7"]
    >>> report.to_html("report.html")      # one offline page; in Jupyter the report renders itself

METHOD.md section 6 is the spec. Every check is a function of an :class:`EvalContext` (the circuit,
its test batch and the model's reference run on it, built once) registered by name
(:mod:`sparselens.faithfulness.registry`): ``losses``, ``stochastic``, ``adversarial``, ``nodes``,
``attention``, ``ood``, ``controls`` (asked for by name: it prunes again on a nonsense version of
the task and on a shuffled-weights model), and ``seeds`` (asked for by name: it prunes again with other
seeds; :func:`seed_stability`). Every run they make is the model's one forward pass with hooks;
``ood``, ``controls`` and ``seeds`` make further runs on other batches or prune again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional, Sequence

from sparselens.faithfulness import controls, losses, ood, partial, parts, seeds  # noqa: F401  (register the checks)
from sparselens.faithfulness.context import CheckResult, EvalContext
from sparselens.faithfulness.registry import CHECKS, Check, register, resolve
from sparselens.faithfulness.report import FaithfulnessReport
from sparselens.faithfulness.seeds import SeedStability, seed_stability

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.prune.circuit import Circuit
    from sparselens.tasks.base import Task


def evaluate(
    model: "HookedSparseTransformer",
    circuit: "Circuit",
    task: "Task",
    *,
    checks: Optional[Sequence[str]] = None,
    n_pairs: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> FaithfulnessReport:
    """Run the faithfulness checks on ``circuit`` (of ``model``, pruned on ``task``).

    Args:
        checks: names of checks to run (``list(CHECKS)``); None runs every default check (``ood``
            only where the task has an OOD split, with a note otherwise).
        n_pairs: test pairs (``2 * n_pairs`` prompts) every check measures on.
        seed: seeds the test pairs and every random draw.

    Raises:
        ValueError: a circuit of another model or task; an unknown check (with a suggestion); a
            check asked for that the task cannot take (``ood`` without an OOD split); NaN logits.
    """
    from tqdm.auto import tqdm

    chosen = resolve(checks)
    ctx = EvalContext.build(model, circuit, task, n_pairs, seed, progress)
    merged = CheckResult()
    seconds, ran = {}, []
    if ctx._means_error:
        merged.notes.append(f"no pretraining means: {ctx._means_error}")
    for check in tqdm(chosen, desc="faithfulness checks", disable=not progress):
        if checks is None and check.name == "ood" and not ood.has_ood(ctx):
            merged.notes.append(f"ood skipped: task {task.name!r} has no 'ood' split")
            continue
        start = time.perf_counter()
        result = check.fn(ctx)
        seconds[check.name] = time.perf_counter() - start
        ran.append(check.name)
        merged.metrics.update(result.metrics)
        merged.flags += result.flags
        merged.notes += result.notes
        for table, rows in ((merged.nodes, result.nodes), (merged.heads, result.heads)):
            for name, row in rows.items():
                table.setdefault(name, {}).update(row)
    summary = {"task": circuit.task, "n_nodes": circuit.n_nodes, "n_edges": circuit.n_edges,
               "ablation": circuit.ablation, "freeze_norms": circuit.freeze_norms,
               "found_with": circuit.config.get("ablation", circuit.ablation), "model_fingerprint": circuit.model_fingerprint,
               "target": circuit.losses.get("target")}
    return FaithfulnessReport(merged.metrics, merged.nodes, merged.heads, merged.flags, merged.notes, ran, seconds,
                              summary, n_pairs, seed)


__all__ = ["CHECKS", "Check", "CheckResult", "EvalContext", "FaithfulnessReport", "SeedStability", "evaluate", "register",
           "seed_stability"]
