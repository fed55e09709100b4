"""``sparselens demo``: the main job, end to end, on the shipped weight-sparse model.

Loads the shipped ``sparse-pygen-2l-128``, prunes it on ``single_double_quote`` (a task it solves:
close a string with the quote that opened it, several tokens back) to the paper's target loss 0.15
with mean ablation (the means ship with the model), prints the losses and the circuit's size, and
writes ``circuit.json`` and ``circuit.html`` (the offline circuit viewer) into ``--out``. It opens
nothing: open the page in a browser yourself.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sparselens.prune.config import add_prune_arguments, prune_config_from_args

DEFAULT_MODEL = "sparse-pygen-2l-128"
#: the demo's own mask-learning budget (the library default is PruneConfig's): about a minute here
DEMO_PRUNE = dict(steps=300, batch_size=32)


#: shown under "examples:" in ``--help``
EXAMPLES = """
sparselens demo
sparselens demo --task bracket_counting --out results/demo-brackets
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Prune the shipped weight-sparse model on a task to a circuit at the target loss, print its losses "
        "and size, and write circuit.json and circuit.html (the offline circuit viewer) into --out. "
        "Opens nothing."
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model directory or registered name (default: %(default)s)")
    parser.add_argument("--task", default="single_double_quote", help="a task the model solves (default: %(default)s)")
    parser.add_argument("--target", type=float, default=0.15, help="target loss per pair (default: %(default)s)")
    add_prune_arguments(parser, **DEMO_PRUNE)
    parser.add_argument("--out", default="results/demo", help="directory for circuit.json and circuit.html (default: %(default)s)")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from sparselens import HookedSparseTransformer
    from sparselens.data import load_corpus
    from sparselens.interventions import pretraining_means
    from sparselens.interventions.means import pretraining_corpus
    from sparselens.prune import prune
    from sparselens.tasks import get_task
    from sparselens.viz import write_viewer

    start = time.perf_counter()
    config = prune_config_from_args(args)
    _say(f"loading {args.model} ...")
    model = HookedSparseTransformer.from_pretrained(args.model)
    task = get_task(args.task, tokenizer=model.tokenizer)
    means = None
    if config.ablation == "mean":
        _say("node means over the model's pretraining corpus (shipped with the model, else computed once) ...")
        means = pretraining_means(model)
    circuit = prune(model, task, args.target, config, means=means)
    out = Path(args.out)
    circuit.save(out / "circuit.json")
    _say("writing the circuit viewer (with each node's top pretraining snippets) ...")
    source, options = pretraining_corpus(model)
    corpus = load_corpus(source, n_ctx=min(64, model.cfg.n_ctx), split="val", tokenizer=model.tokenizer, **options)
    page = write_viewer(model, circuit, out / "circuit.html", task=task, corpus_tokens=corpus[:512])
    losses, n = circuit.losses, config.eval_pairs
    with torch.no_grad():
        total_nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    rows = [
        ("model", f"{args.model} ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}, "
                  f"{total_nonzero:,} nonzero weights, {model.node_registry.n_nodes:,} nodes)"),
        ("task", f"{task.name}: {task.description}"),
        ("losses", f"per pair, on {n} test pairs (the bisection used {n} validation pairs)"),
        ("  full model", f"{losses['model']:.4f}"),
        ("  circuit", f"{losses['circuit']:.4f} (target {losses['target']:g}; {losses['circuit_val']:.4f} on the validation pairs)"),
        ("  empty circuit", f"{losses['empty']:.4f} (every node {circuit.ablation}-ablated)"),
        ("circuit size", f"{circuit.n_nodes} nodes, {circuit.n_edges} edges (+{circuit.residual_links} residual links)"),
        ("ablation", f"{circuit.ablation}, norms {'frozen' if circuit.freeze_norms else 'free'}, "
                     f"{config.steps} mask-learning steps of {config.batch_size} pairs"),
        ("time", f"{time.perf_counter() - start:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(f"\nThe circuit viewer (open it in a browser; works offline): {page.resolve()}")
    print(f"The circuit itself: {(out / 'circuit.json').resolve()}")
    return 0
