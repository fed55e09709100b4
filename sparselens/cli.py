"""The ``sparselens`` command line: ``sparselens COMMAND [options]``.

Each subcommand lives beside the concept it drives and is imported only when it runs, so
``sparselens --help`` stays fast. A subcommand module provides ``add_arguments(parser)``,
``run(args) -> int`` and ``EXAMPLES`` (command lines shown under ``examples:`` in its ``--help``).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Optional, Sequence

from sparselens.cli_parser import CommandParser, examples_epilog
from sparselens.errors import SparselensError, closest_hint

#: subcommand -> (module providing add_arguments/run, one-line help)
SUBCOMMANDS = {
    "demo": ("sparselens.demo", "prune the shipped sparse model on single_double_quote; write the circuit and its viewer page"),
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


#: shown under ``examples:`` in ``sparselens --help``
EXAMPLES = """
sparselens demo
sparselens evaluate --models sparse-pygen-2l-128,dense-pygen-2l-128
sparselens prune --model sparse-pygen-2l-128 --task single_double_quote --targets 0.1,0.15
sparselens faithfulness results/circuits/single_double_quote-mean-seed0-target0.15.json --model sparse-pygen-2l-128
sparselens COMMAND --help
"""


def top_level_parser() -> CommandParser:
    """``sparselens --help``: the commands, one line each, ``--version`` and examples."""
    from sparselens import __version__

    parser = CommandParser(
        prog="sparselens", description="TransformerLens for weight-sparse transformers: train, prune to circuits, check faithfulness.",
        epilog=examples_epilog(EXAMPLES),
    )
    parser.add_argument("--version", action="version", version=f"sparselens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(name: str) -> tuple[CommandParser, Any]:
    """The parser of subcommand ``name`` (its options, defaults shown, and its module's examples) and the module."""
    module = importlib.import_module(SUBCOMMANDS[name][0])
    parser = CommandParser(prog=f"sparselens {name}", description=SUBCOMMANDS[name][1], epilog=examples_epilog(module.EXAMPLES))
    module.add_arguments(parser)
    return parser, module


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") or argv[0] not in SUBCOMMANDS:
        parser = top_level_parser()
        if argv and not argv[0].startswith("-"):
            parser.print_usage(sys.stderr)
            print(f"sparselens: unknown command {argv[0]!r}{closest_hint(argv[0], SUBCOMMANDS)}", file=sys.stderr)
            return 2
        if not argv:
            parser.print_help()
            return 0
        parser.parse_args(argv)  # --help, --version or an unknown option: argparse prints and exits
        return 0
    name, rest = argv[0], argv[1:]
    sub_parser, module = command_parser(name)
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
