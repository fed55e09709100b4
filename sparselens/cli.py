"""The ``sparselens`` command line: ``sparselens {demo,summary,tasks,evaluate,train,prune,compare,view,faithfulness,seeds,bridges} ...``.

Each subcommand lives beside the concept it drives and is imported only when it runs, so
``sparselens --help`` stays fast. A subcommand module provides ``add_arguments(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from sparselens.errors import SparselensError

#: subcommand -> (module providing add_arguments/run, one-line help)
SUBCOMMANDS = {
    "demo": ("sparselens.demo", "prune the shipped sparse model on single_double_quote and open the circuit viewer"),
    "summary": ("sparselens.model.summary_cli", "build a model and print its hook points and node sites"),
    "tasks": ("sparselens.tasks.cli", "list tasks with one example pair each"),
    "evaluate": ("sparselens.tasks.evaluate_cli", "per-task test loss and accuracy of models, as a markdown table"),
    "train": ("sparselens.train.cli", "train a weight-sparse (or dense) model from a YAML config"),
    "prune": ("sparselens.prune.cli", "prune a model on a task to circuits at one or more target losses"),
    "compare": ("sparselens.prune.compare", "the paper's comparisons on the shipped models (sparse vs dense, ablations, frozen norms)"),
    "view": ("sparselens.viz.view_cli", "write the offline interactive circuit viewer for a circuit JSON"),
    "faithfulness": ("sparselens.faithfulness.cli", "the faithfulness report of a circuit: is it what the model does?"),
    "seeds": ("sparselens.faithfulness.seeds", "prune once per seed and compare the circuits (also under torchrun)"),
    "bridges": ("sparselens.bridges.cli", "train bridges between a dense and a sparse model (train), or evaluate them per site (evaluate)"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="sparselens", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            from sparselens.errors import closest_hint

            print(f"sparselens: unknown command {argv[0]!r}{closest_hint(argv[0], SUBCOMMANDS)}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sub_parser = argparse.ArgumentParser(prog=f"sparselens {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except (SparselensError, ValueError, KeyError, FileNotFoundError, NotADirectoryError) as err:
        # bad input: the message says what and what to do; SPARSELENS_DEBUG=1 shows the traceback
        if os.environ.get("SPARSELENS_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str) else str(err)
        print(f"sparselens {name}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
