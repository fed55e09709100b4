"""``sparselens evaluate``: per-task test loss and accuracy of one or more models, as a markdown table.

    sparselens evaluate --models sparse-2l-128,dense-2l-128
"""

from __future__ import annotations

import argparse
import math
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, help="comma-separated model directories or registered names")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: every Python task)")
    parser.add_argument("--pairs", type=int, default=128, help="test pairs per task")
    parser.add_argument("--solve", type=float, default=0.1, help="mark losses at or below this as solved")


def evaluate(model, task_names: list[str], pairs: int) -> dict[str, tuple[float, float]]:
    """(test loss per pair, accuracy) of ``model`` on each task; NaN where the task cannot be built."""
    import torch

    from sparselens.tasks import get_task

    out = {}
    for name in task_names:
        try:
            task = get_task(name, tokenizer=model.tokenizer)
        except ValueError:
            out[name] = (math.nan, math.nan)
            continue
        batch = task.batch(n=pairs, split="test", seed=0)
        with torch.no_grad():
            logits = model(batch.tokens)
        out[name] = (float(task.loss_from_logits(logits, batch)), float(task.accuracy_from_logits(logits, batch)))
    return out


def run(args: argparse.Namespace) -> int:
    from sparselens import HookedSparseTransformer
    from sparselens.errors import CheckpointError
    from sparselens.tasks import list_tasks

    names = args.models.split(",")
    try:
        models = {name: HookedSparseTransformer.from_pretrained(name) for name in names}
    except CheckpointError as err:
        print(f"sparselens evaluate: {err}", file=sys.stderr)
        return 2
    tasks = args.tasks.split(",") if args.tasks else list_tasks("python")
    results = {name: evaluate(model, tasks, args.pairs) for name, model in models.items()}
    print(f"Test loss per pair (accuracy) on {args.pairs} pairs per task; **bold**: loss <= {args.solve}.\n")
    print("| task | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for task in tasks:
        cells = []
        for name in names:
            loss, acc = results[name][task]
            text = "n/a" if math.isnan(loss) else f"{loss:.3f} ({acc:.0%})"
            cells.append(f"**{text}**" if loss <= args.solve else text)
        print(f"| {task} | " + " | ".join(cells) + " |")
    solved = {name: sum(results[name][t][0] <= args.solve for t in tasks) for name in names}
    print("\nTasks solved: " + ", ".join(f"{name} {n}/{len(tasks)}" for name, n in solved.items()))
    return 0
