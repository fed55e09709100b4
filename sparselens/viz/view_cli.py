"""``sparselens view circuit.json --model PATH_OR_NAME [-o circuit.html]``: write the offline circuit viewer.

Bad inputs (a missing or corrupt circuit file, a circuit found on another model, an unknown
model, task or node name) print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sparselens.errors import CheckpointError

#: shown under "examples:" in ``--help``
EXAMPLES = """
sparselens view results/circuits/single_double_quote-mean-seed0-target0.15.json --model sparse-pygen-2l-128
sparselens view circuit.json --model sparse-pygen-2l-128 --report report.json --node L0.attn_out[5]
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("circuit", type=Path, help="circuit JSON written by `sparselens prune` or Circuit.save")
    parser.add_argument("--model", required=True, help="the model the circuit was pruned from: a directory or a registered name")
    parser.add_argument("--task", default=None, help="task whose prompts are shown (default: the circuit's own task)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="HTML file to write (default: the circuit path with .html)")
    parser.add_argument("--node", default=None, help="a circuit node whose panel is open when the page loads, e.g. L0.neuron[17]")
    parser.add_argument("--prompts", type=int, default=8, help="task prompts shown per node (default 8)")
    parser.add_argument("--corpus", default=None,
                        help="corpus for top-activating snippets: a name, folder or hub name for "
                             "sparselens.data.load_corpus (default: the model's pretraining corpus, from its "
                             "train_config.yaml)")
    parser.add_argument("--snippets", type=int, default=5,
                        help="top-activating snippets per node; 0 skips the corpus (default 5)")
    parser.add_argument("--corpus-rows", type=int, default=64, help="corpus rows of 64 tokens scanned for snippets (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts and the corpus sample")
    parser.add_argument("--report", type=Path, default=None,
                        help="a faithfulness report of this circuit (the JSON `sparselens faithfulness -o` writes): "
                             "nodes coloured by its model/circuit correlation, its flags in the panels")
    parser.add_argument("--device", default=None, help="torch device for the model (default: the checkpoint's)")


def _fail(message: str) -> int:
    print(f"sparselens view: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from sparselens import HookedSparseTransformer
    from sparselens.prune import Circuit
    from sparselens.viz.viewer import write_viewer

    if args.prompts < 1 or args.snippets < 0 or args.corpus_rows < 1:
        return _fail("--prompts and --corpus-rows must be at least 1 and --snippets at least 0")
    try:
        circuit = Circuit.load(args.circuit)
    except FileNotFoundError as err:
        return _fail(f"{err}; pass the circuit JSON that `sparselens prune` or Circuit.save wrote")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return _fail(f"cannot read the circuit {args.circuit}: {err}")
    try:
        model = HookedSparseTransformer.from_pretrained(args.model, device=args.device)
    except (CheckpointError, OSError, ValueError, KeyError) as err:
        return _fail(f"cannot load the model {args.model!r}: {err}")
    corpus = None
    if args.snippets:
        from sparselens.data import load_corpus
        from sparselens.interventions.means import pretraining_corpus

        source = args.corpus
        options: dict[str, Any] = {}  # load_corpus keywords
        try:
            if source is None:
                source, options = pretraining_corpus(model)
            corpus = load_corpus(source, n_ctx=min(64, model.cfg.n_ctx), split="val", tokenizer=model.tokenizer,
                                 **options)
        except (OSError, ValueError) as err:
            return _fail(f"cannot load the snippet corpus {source or '(the model does not name one)'}: {err}; pass "
                         "--corpus NAME_OR_FOLDER, or --snippets 0 to skip snippets")
    output = args.output or args.circuit.with_suffix(".html")
    try:
        path = write_viewer(model, circuit, output, task=args.task, n_prompts=args.prompts, corpus_tokens=corpus,
                            n_snippets=args.snippets, corpus_rows=args.corpus_rows, selected=args.node, seed=args.seed,
                            report=args.report)
    except (ValueError, KeyError, IndexError) as err:
        return _fail(str(err))
    except OSError as err:
        return _fail(f"cannot write {output}: {err}")
    print(circuit.summary())
    print(f"wrote the circuit viewer to {path.resolve()}")
    print(f"open it in a browser: file://{path.resolve()}")
    return 0
