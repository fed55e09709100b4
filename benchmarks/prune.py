"""Time per pruning step, and the share of it spent outside the model's own forward and backward.

A pruning step (``sparselens.prune.MaskTrainer.step``, exactly what ``prune`` runs) is: draw the
batch from the pre-tokenized pool, compute the masks, attach the mask hooks (and, for resample or
frozen norms, build the batch's reference run), forward, task loss, backward into ``tau``, AdamW,
clamp. The baseline is the model's own forward and backward on the same tokens with no hooks (the
gradient taken with respect to the embedding output, so the backward crosses the whole network).
The difference is the pruning machinery's overhead. Target (issue 11): at most 20%.

    python benchmarks/prune.py                      # the shipped sparse model if present
    python benchmarks/prune.py --model path/to/model --task bracket_counting
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sparselens import HookedSparseTransformer
from sparselens.interventions import Ablation, compute_means
from sparselens.prune import MaskTrainer, PruneConfig
from sparselens.tasks import get_task


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sparse-pygen-2l-128")
    parser.add_argument("--task", default="single_double_quote")
    parser.add_argument("--batch-size", type=int, default=64, help="prompt pairs per step")
    parser.add_argument("--ablation", default="mean", choices=Ablation.choices())
    parser.add_argument("--freeze-norms", action="store_true")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    model = HookedSparseTransformer.from_pretrained(args.model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    task = get_task(args.task, tokenizer=model.tokenizer)
    config = PruneConfig(ablation=args.ablation, freeze_norms=args.freeze_norms, steps=10_000, batch_size=args.batch_size)
    trainer = MaskTrainer(model, task, config)
    batch = trainer.batch(0)
    trainer.means = compute_means(model, [batch.tokens], progress=False) if args.ablation == "mean" else None

    def model_forward_backward() -> None:
        captured = {}

        def keep_grad(x, hook):
            x.requires_grad_(True)
            captured["embed"] = x
            return x

        logits = model.run_with_hooks(batch.tokens, fwd_hooks=[("hook_embed", keep_grad)])
        task.loss_from_logits(logits, batch).backward()

    steps = iter(range(10_000))
    runs = {
        "model forward + backward": model_forward_backward,
        "pruning step (batch drawn)": lambda: trainer.step(trainer.batch(next(steps))),
        "pruning step (batch given)": lambda: trainer.step(batch),
    }
    for fn in runs.values():
        fn()
    timings = {name: median_ms(fn, args.repeats) for name, fn in runs.items()}
    base = timings["model forward + backward"]
    print(f"{args.model} on {args.task}: {args.batch_size} pairs ({batch.tokens.shape[0]} x {batch.tokens.shape[1]} tokens), "
          f"{args.ablation} ablation{', frozen norms' if args.freeze_norms else ''}, {torch.get_num_threads()} threads")
    print(f"{'run':<30}{'median ms':>10}{'outside model':>15}")
    for name, ms in timings.items():
        print(f"{name:<30}{ms:>10.1f}{(ms - base) / ms:>14.0%}")


if __name__ == "__main__":
    main()
