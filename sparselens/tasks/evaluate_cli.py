"""``sparselens evaluate``: per-task test loss and accuracy of one or more models, as a markdown table.

    sparselens evaluate --models sparse-pygen-2l-128,dense-pygen-2l-128
    sparselens evaluate --models sparse-pygen-2l-128 --empty    # + the mean-ablated empty circuit's loss per task

A task is *solved* at test loss <= ``--solve``; with ``--empty`` a solved task is also marked
*non-degenerate* when its empty circuit (every node mean-ablated, pretraining means) stays above
``--degenerate`` (2x the paper's target 0.15): the last token alone does not decide it.
"""

from __future__ import annotations

import argparse
import json
import math

#: shown under "examples:" in ``--help``
EXAMPLES = """
sparselens evaluate --models sparse-pygen-2l-128,dense-pygen-2l-128
sparselens evaluate --models sparse-pygen-2l-128 --empty
sparselens evaluate --models sparse-pygen-2l-128 --tasks single_double_quote --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, help="comma-separated model directories or registered names")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: every Python task)")
    parser.add_argument("--pairs", type=int, default=128, help="test pairs per task")
    parser.add_argument("--solve", type=float, default=0.1, help="mark losses at or below this as solved (default: %(default)s)")
    parser.add_argument("--empty", action="store_true", help="also the mean-ablated empty circuit's test loss per task")
    parser.add_argument("--degenerate", type=float, default=0.3,
                        help="with --empty: a solved task whose empty circuit reaches this is degenerate (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (per model and task) instead of the table")


def evaluate(model, task_names: list[str], pairs: int, means=None) -> dict[str, tuple[float, ...]]:
    """(test loss per pair, accuracy[, empty-circuit loss]) of ``model`` per task; NaN where the task
    cannot be built. With ``means`` the third value is the test loss with every node mean-ablated."""
    import torch

    from sparselens.nodes import NodeMask
    from sparselens.prune.circuit import circuit_loss
    from sparselens.tasks import get_task

    out = {}
    for name in task_names:
        try:
            task = get_task(name, tokenizer=model.tokenizer)
        except ValueError:
            out[name] = (math.nan,) * (2 if means is None else 3)
            continue
        batch = task.batch(n=pairs, split="test", seed=0)
        with torch.no_grad():
            logits = model(batch.tokens)
        row: tuple[float, ...] = (float(task.loss_from_logits(logits, batch)), float(task.accuracy_from_logits(logits, batch)))
        if means is not None:
            empty = NodeMask.full(model.node_registry, keep=False)
            row += (circuit_loss(model, task, empty, batch, "mean", None, means),)
        out[name] = row
    return out


def json_results(results: dict[str, dict[str, tuple[float, ...]]], args: argparse.Namespace) -> dict:
    """``--json``'s document: the settings, then per model and task its loss, accuracy, solved (and empty, degenerate)."""
    from sparselens.files import json_safe

    models: dict[str, dict[str, dict]] = {}
    for name, per_task in results.items():
        models[name] = {}
        for task, (loss, acc, *empty) in per_task.items():
            row = {"loss": loss, "accuracy": acc, "solved": bool(loss <= args.solve)}
            if empty:
                row.update(empty=empty[0], degenerate=bool(loss <= args.solve and empty[0] <= args.degenerate))
            models[name][task] = row
    return json_safe({"split": "test", "pairs": args.pairs, "solve": args.solve, "degenerate": args.degenerate if args.empty else None,
                      "models": models})


def run(args: argparse.Namespace) -> int:
    from sparselens import HookedSparseTransformer
    from sparselens.tasks import list_tasks

    names = args.models.split(",")
    models = {name: HookedSparseTransformer.from_pretrained(name) for name in names}
    from sparselens.interventions import pretraining_means

    tasks = args.tasks.split(",") if args.tasks else list_tasks("python")
    results = {name: evaluate(model, tasks, args.pairs, pretraining_means(model) if args.empty else None)
               for name, model in models.items()}
    if args.json:
        print(json.dumps(json_results(results, args), indent=1))
        return 0
    empty_note = (f"; after it, the empty circuit's loss (every node mean-ablated); *degenerate*: solved and the "
                  f"empty circuit reaches {args.degenerate}") if args.empty else ""
    print(f"Test loss per pair (accuracy) on {args.pairs} test pairs per task; **bold**: loss <= {args.solve}{empty_note}.\n")
    print("| task | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for task in tasks:
        cells = []
        for name in names:
            loss, acc, *empty = results[name][task]
            text = "n/a" if math.isnan(loss) else f"{loss:.3f} ({acc:.0%})"
            text = f"**{text}**" if loss <= args.solve else text
            if empty:
                text += f" / {empty[0]:.2f}" + (" *degenerate*" if loss <= args.solve and empty[0] <= args.degenerate else "")
            cells.append(text)
        print(f"| {task} | " + " | ".join(cells) + " |")
    solved = {name: [t for t in tasks if results[name][t][0] <= args.solve] for name in names}
    summary = []
    for name in names:
        text = f"{name} {len(solved[name])}/{len(tasks)}"
        if args.empty:
            hard = [t for t in solved[name] if results[name][t][2] > args.degenerate]
            text += f" ({len(hard)} non-degenerate: {', '.join(hard) or 'none'})"
        summary.append(text)
    print("\nTasks solved: " + ", ".join(summary))
    return 0
