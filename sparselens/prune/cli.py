"""``sparselens prune``: prune a model on a task at one or more target losses; table, plot and circuit files.

    sparselens prune --model sparse-pygen-2l-128 --task single_double_quote --targets 0.05,0.1,0.15,0.3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sparselens.prune.config import add_prune_arguments, prune_config_from_args

#: shown under "examples:" in ``--help``
EXAMPLES = """
sparselens prune --model sparse-pygen-2l-128 --task single_double_quote
sparselens prune --model sparse-pygen-2l-128 --task bracket_counting --targets 0.05,0.1,0.15,0.3 --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model directory or registered name (sparselens.pretrained.list_models())")
    parser.add_argument("--task", required=True, help="a task name (sparselens tasks lists them)")
    parser.add_argument("--targets", default="0.15", help="comma-separated target losses (per pair, averaged) (default: %(default)s)")
    add_prune_arguments(parser)
    parser.add_argument("--out", default="results/circuits", help="directory for circuit JSON files and the plot (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the sweep as JSON (losses, sizes and files per target) instead of the table")


def circuit_table(circuits) -> str:
    """A plain-text table of a sweep's circuits."""
    rows = [f"{'target':>8}{'nodes':>8}{'edges':>9}{'circuit':>10}{'model':>9}{'empty':>9}"]
    for c in circuits:
        l = c.losses
        rows.append(f"{l['target']:>8.3f}{c.n_nodes:>8}{c.n_edges:>9}{l['circuit']:>10.4f}{l['model']:>9.4f}{l['empty']:>9.4f}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from sparselens import HookedSparseTransformer
    from sparselens.files import json_safe
    from sparselens.prune import prune_sweep
    from sparselens.tasks import get_task
    from sparselens.viz import circuit_size_plot

    try:
        targets = sorted(float(t) for t in args.targets.split(","))
    except ValueError:
        print(f"sparselens prune: --targets must be numbers separated by commas, got {args.targets!r}", file=sys.stderr)
        return 2
    model = HookedSparseTransformer.from_pretrained(args.model)
    task = get_task(args.task, tokenizer=model.tokenizer)
    circuits = prune_sweep(model, task, targets, prune_config_from_args(args))
    out = Path(args.out)
    stem = f"{task.name}-{args.ablation}{'-frozen' if args.freeze_norms else ''}-seed{args.seed}"
    files = [circuit.save(out / f"{stem}-target{circuit.losses['target']:g}.json") for circuit in circuits]
    plot = circuit_size_plot(circuits).save(out / f"{stem}-sweep.html")
    if args.json:
        rows = [{"target": c.losses["target"], "n_nodes": c.n_nodes, "n_edges": c.n_edges, "losses": c.losses, "file": str(f)}
                for c, f in zip(circuits, files)]
        print(json.dumps(json_safe({"model": args.model, "task": task.name, "ablation": args.ablation, "freeze_norms": args.freeze_norms,
                                    "seed": args.seed, "eval_pairs": args.eval_pairs, "split": "test", "circuits": rows,
                                    "plot": str(plot)}), indent=1))
        return 0
    print(f"{task.name} on {args.model}: {args.ablation} ablation{', frozen norms' if args.freeze_norms else ''}, "
          f"seed {args.seed} (losses per pair on {args.eval_pairs} test pairs)")
    print(circuit_table(circuits))
    print(f"circuits and plot written to {out}/ (plot: {plot})")
    return 0
