"""Time of the default faithfulness report, split by check, against one forward + backward of the model.

The report is ``sparselens.faithfulness.evaluate(model, circuit, task, n_pairs=64)`` with the default
checks, exactly what ``sparselens faithfulness`` runs. The baseline is the model's own forward and
backward on the same test prompts with no hooks (the gradient taken with respect to the embedding
output, so the backward crosses the whole network): each check's time is printed in units of it.
Target (issue 12): the whole default report within 60 s on the 2-core CPU.

    python benchmarks/faithfulness.py                            # prunes a quick circuit first
    python benchmarks/faithfulness.py --circuit results/demo/circuit.json --task single_double_quote
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import sparselens.faithfulness as faithfulness
from sparselens import HookedSparseTransformer
from sparselens.prune import Circuit, PruneConfig, prune
from sparselens.tasks import get_task


def median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sparse-pygen-2l-128")
    parser.add_argument("--task", default="single_double_quote")
    parser.add_argument("--circuit", default=None, help="a circuit file (default: prune one with 60 quick steps)")
    parser.add_argument("--n-pairs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the baseline (the report runs once)")
    args = parser.parse_args()

    model = HookedSparseTransformer.from_pretrained(args.model).eval()
    task = get_task(args.task, tokenizer=model.tokenizer)
    if args.circuit:
        circuit = Circuit.load(args.circuit)
    else:
        circuit = prune(model, task, 0.15, PruneConfig(steps=60, batch_size=32), progress=False)
    batch = task.batch(n=args.n_pairs, split="test", seed=0)

    def model_forward_backward() -> None:
        def keep_grad(x, hook):
            return x.requires_grad_(True)

        logits = model.run_with_hooks(batch.tokens, fwd_hooks=[("hook_embed", keep_grad)])
        task.loss_from_logits(logits, batch).backward()

    for p in model.parameters():
        p.requires_grad_(False)
    model_forward_backward()
    base = median_s(model_forward_backward, args.repeats)

    start = time.perf_counter()
    report = faithfulness.evaluate(model, circuit, task, n_pairs=args.n_pairs, progress=False)
    total = time.perf_counter() - start
    setup = total - sum(report.seconds.values())

    print(f"{args.model} on {args.task}: circuit of {circuit.n_nodes} nodes, {args.n_pairs} test pairs "
          f"({batch.tokens.shape[0]} x {batch.tokens.shape[1]} tokens), {torch.get_num_threads()} threads")
    print(f"model forward + backward (baseline): {base * 1e3:.1f} ms")
    print(f"{'part':<34}{'seconds':>9}{'x baseline':>12}")
    for name, seconds in [("test batch + reference run + means", setup), *report.seconds.items()]:
        print(f"{name:<34}{seconds:>9.2f}{seconds / base:>12.0f}")
    print(f"{'whole default report':<34}{total:>9.2f}{total / base:>12.0f}   (target <= 60 s: "
          f"{'met' if total <= 60 else 'NOT met'})")


if __name__ == "__main__":
    main()
