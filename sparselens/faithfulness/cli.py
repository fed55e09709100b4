"""``sparselens faithfulness``: the faithfulness report of a saved circuit, as a table and an offline page."""

from __future__ import annotations

import argparse
import json
import sys

#: shown under "examples:" in ``--help``
EXAMPLES = """
sparselens faithfulness results/circuits/single_double_quote-mean-seed0-target0.15.json --model sparse-pygen-2l-128 -o results/report.html
sparselens faithfulness circuit.json --model sparse-pygen-2l-128 --checks losses,adversarial --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sparselens.faithfulness.registry import CHECKS

    parser.add_argument("circuit", help="a circuit JSON file (written by sparselens prune or demo)")
    parser.add_argument("--model", required=True, help="the model the circuit was pruned from (directory or registered name)")
    parser.add_argument("--task", default=None, help="the task (default: the circuit's own)")
    parser.add_argument("--checks", default=None,
                        help=f"comma-separated checks (default: every default check); one of {', '.join(CHECKS)}")
    parser.add_argument("--pairs", type=int, default=128, help="test pairs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pairs and every random draw (default: %(default)s)")
    parser.add_argument("-o", "--out", default=None, help="write the report page here (HTML; a .json next to it)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from sparselens import Circuit, HookedSparseTransformer
    from sparselens.faithfulness import evaluate
    from sparselens.files import json_safe
    from sparselens.tasks import get_task

    circuit = Circuit.load(args.circuit)
    model = HookedSparseTransformer.from_pretrained(args.model)
    task = get_task(args.task or circuit.task, tokenizer=model.tokenizer)
    report = evaluate(model, circuit, task, checks=args.checks.split(",") if args.checks else None,
                      n_pairs=args.pairs, seed=args.seed)
    if args.json:
        print(json.dumps(json_safe(report.metrics), indent=1))
    else:
        print(report)
    if args.out:
        page = report.to_html(args.out)
        saved = report.save(page.with_suffix(".json"))
        print(f"report page: {page.resolve()} (data: {saved})", file=sys.stderr)
    return 0
