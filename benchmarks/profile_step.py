"""Where does one training step spend its time? torch.profiler over the trainer's step at a config.

Builds the trainer of a shipped config (``configs/*.yaml``) on random tokens of the config's shape,
takes the schedule to its target L0 (the steady state of a run), warms up, then profiles a few
steps and prints the ops with the most self CPU time and the share of the step outside matmuls.

    python benchmarks/profile_step.py configs/pygen-sparse-2l-128.yaml --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

from sparselens.train import TokenSplits, TrainConfig, Trainer

#: ops whose self time is matmul work (dense products of the linears, einsums, attention; the
#: CPU linear that walks a sparse weight's nonzeros, ``sparselens.kernels.linear_cpu``, with its
#: block transposes)
MATMUL_OPS = (
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
    "LinearFunction", "LinearFunctionBackward",
)
#: torch's fused attention kernels (the trainer's attention): its two matmuls with the softmax between them
FUSED_ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def profile_steps(cfg: TrainConfig, steps: int, top: int) -> None:
    m = cfg.model
    tokens = torch.randint(0, m.d_vocab, (cfg.batch_size * 4, m.n_ctx), generator=torch.Generator().manual_seed(0))
    trainer = Trainer(cfg, tokens=TokenSplits(train=tokens, val=tokens[: cfg.batch_size]))
    at = cfg.n_steps // 2 + 1  # past the anneal: the weights are at the target L0
    trainer.sparsifier.apply(trainer.l0_at(at))
    batch = tokens[: cfg.batch_size]
    for _ in range(2):  # warm-up (allocator, Adam state, JIT caches)
        trainer.step = at
        trainer.train_step(batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.step = at
            trainer.train_step(batch)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    attention = sum(e.self_cpu_time_total for e in events if e.key in FUSED_ATTENTION_OPS)
    print(
        f"{m.n_layers} layers, d_model {m.d_model}, batch {cfg.batch_size} x {m.n_ctx}, L0 {cfg.l0_target:g}, "
        f"{torch.get_num_threads()} threads: {total / steps / 1e3:.1f} ms/step (self CPU, profiled)"
    )
    print(f"share outside matmuls ({', '.join(MATMUL_OPS)}): {100 * (1 - matmul / total):.0f}%; "
          f"outside matmuls and fused attention: {100 * (1 - (matmul + attention) / total):.0f}%\n")
    print("| op | self CPU ms/step | share | calls/step |")
    print("|---|---:|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        share = 100 * e.self_cpu_time_total / total
        print(f"| `{e.key}` | {e.self_cpu_time_total / steps / 1e3:.1f} | {share:.0f}% | {e.count // steps} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/pygen-sparse-2l-128.yaml")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (times are per step)")
    parser.add_argument("--top", type=int, default=15, help="rows of the table")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig.from_yaml(args.config)
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = dataclasses.replace(cfg, device="cpu", out_dir=out_dir, progress=False)
        profile_steps(cfg, args.steps, args.top)


if __name__ == "__main__":
    main()
