"""``sparselens demo``: the main job, end to end on the shipped weight-sparse model.

Loads ``sparse-2l-128``, prunes it on ``single_double_quote`` to a circuit at target loss 0.15
(mean ablation, means shipped with the model; if the model itself does not reach 0.15 the target
becomes 1.25x the model's loss, and the demo says so), prints a summary and writes the offline
circuit viewer page.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="sparse-2l-128", help="model directory or registered name")
    parser.add_argument("--task", default="single_double_quote")
    parser.add_argument("--target", type=float, default=0.15, help="target loss per pair")
    parser.add_argument("--ablation", choices=["mean", "zero", "resample"], default="mean")
    parser.add_argument("--steps", type=int, default=200, help="mask-learning steps")
    parser.add_argument("--out", default="sparselens-demo", help="directory for circuit.json and circuit.html")


def run(args: argparse.Namespace) -> int:
    import torch

    from sparselens import HookedSparseTransformer
    from sparselens.data import load_corpus
    from sparselens.interventions import pretraining_means
    from sparselens.prune import prune
    from sparselens.tasks import get_task
    from sparselens.viz import write_viewer

    start = time.perf_counter()
    print(f"loading {args.model} ...", flush=True)
    model = HookedSparseTransformer.from_pretrained(args.model)
    task = get_task(args.task, tokenizer=model.tokenizer)
    means = pretraining_means(model) if args.ablation == "mean" else None
    with torch.no_grad():
        full_loss = float(task.loss(model, task.batch(n=128, split="val", seed=0)))
    target = args.target
    if full_loss > target:  # a circuit cannot beat its model: aim just above what the model reaches
        target = round(1.25 * full_loss, 3)
        print(f"note: {args.model} reaches {full_loss:.3f} on {task.name} (validation), above the target "
              f"{args.target}; pruning to {target} (1.25x the model's loss) instead", flush=True)
    circuit = prune(model, task, target_loss=target, ablation=args.ablation, means=means, steps=args.steps)
    out = Path(args.out)
    circuit.save(out / "circuit.json")
    print("writing the circuit viewer (with top pretraining snippets per node) ...", flush=True)
    corpus = load_corpus(n_ctx=min(64, model.cfg.n_ctx), split="val", tokenizer=model.tokenizer)
    page = write_viewer(model, circuit, out / "circuit.html", task=task, corpus_tokens=corpus)
    losses = circuit.losses
    total_nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    rows = [
        ("model", f"{args.model} ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}, "
                  f"{total_nonzero:,} nonzero weights, {model.node_registry.n_nodes:,} nodes)"),
        ("task", f"{task.name} (loss per pair on test pairs)"),
        ("full model loss", f"{losses['model']:.4f}"),
        ("circuit loss", f"{losses['circuit']:.4f} (target {losses['target']})"),
        ("empty circuit loss", f"{losses['empty']:.4f}"),
        ("circuit size", f"{circuit.n_nodes} nodes, {circuit.n_edges} edges"),
        ("ablation", f"{circuit.ablation}, norms {'frozen' if circuit.freeze_norms else 'free'}"),
        ("time", f"{time.perf_counter() - start:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(f"\nOpen the circuit viewer: {page.resolve()}")
    print(f"The circuit itself: {(out / 'circuit.json').resolve()}")
    return 0
