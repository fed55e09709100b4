"""How fast is one step of the weight-sparse trainer? Ratio against a straightforward implementation.

The baseline is the recipe as the best-known public replication writes it, on the same model
(the same parameters, deep-copied) and the same batch:

* the forward written out in eager torch, with AbsTopK as ``torch.topk(x.abs(), k)`` and
  ``torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))`` (not sparselens' forward or kernels);
* the gradient RMS summed from a ``.item()`` per parameter, then ``torch.optim.Adam``;
* each matrix masked with ``torch.topk`` of ``|w|`` over the flattened matrix, plus the floor from
  a ``torch.topk`` of ``|w|`` along every row (column), then multiplied by the mask and decayed.

Both steps run in this process, interleaved, from the same starting weights; the median of several
steps is reported, in wall-clock time and in CPU time of the process (all threads; on a machine
shared with other work the CPU time at ``--threads 1`` is the steadier measure), and then the share
of our step that is not matmul work (torch.profiler).

    python benchmarks/train_step.py                  # d_model 256, 4 layers, L0 1/16, batch 8 x 128, CPU
    python benchmarks/train_step.py --batch 32 --device cuda

Targets (issue 10, 2 CPU threads): at least 2x at batch 8 x 128 and 1.5x at 32 x 128; under a third
of our step outside matmuls.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from profile_step import FUSED_ATTENTION_OPS, MATMUL_OPS
from torch.profiler import ProfilerActivity, profile

from sparselens import HookedSparseTransformer, SparseTransformerConfig
from sparselens.train import TokenSplits, TrainConfig, Trainer
from sparselens.train.sparsifier import WeightSparsifier


def replication_abstopk(x: torch.Tensor, k: int | None) -> torch.Tensor:
    """AbsTopK as the public replication writes it (``k=None``: no sparsity at this site)."""
    if k is None:
        return x
    idx = torch.topk(x.abs(), k, dim=-1).indices
    return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))


def replication_loss(model: HookedSparseTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """The model's mean next-token loss, written out in eager torch (no hooks, no sparselens kernels)."""
    cfg = model.cfg

    def norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.eps) * w

    resid = model.embed.W_E[tokens]
    n_pos = tokens.shape[1]
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=tokens.device).tril()
    for block in model.blocks:
        attn, mlp = block.attn, block.mlp
        x = replication_abstopk(norm(resid, block.ln1.w), block.topk_attn_in.k)
        q = replication_abstopk(attn.q_proj(x), attn.topk_q.k).view(*x.shape[:2], cfg.n_heads, cfg.d_head)
        k = replication_abstopk(attn.k_proj(x), attn.topk_k.k).view(*x.shape[:2], cfg.n_heads, cfg.d_head)
        v = replication_abstopk(attn.v_proj(x), attn.topk_v.k).view(*x.shape[:2], cfg.n_heads, cfg.d_head)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(cfg.d_head)
        scores = scores.masked_fill(~causal, float("-inf"))
        z = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v)
        resid = resid + replication_abstopk(attn.o_proj(z.reshape(*z.shape[:2], cfg.d_qkv)), block.topk_attn_out.k)
        x = replication_abstopk(norm(resid, block.ln2.w), block.topk_mlp_in.k)
        post = replication_abstopk(F.gelu(mlp.fc_in(x)), mlp.topk_neuron.k)
        resid = resid + replication_abstopk(mlp.fc_out(post), block.topk_mlp_out.k)
    logits = model.unembed(norm(resid, model.ln_final.w))
    return F.cross_entropy(logits[:, :-1].reshape(-1, cfg.d_vocab), tokens[:, 1:].reshape(-1))


class BaselineStep:
    """One training step written the straightforward way (see the module docstring)."""

    def __init__(self, model: HookedSparseTransformer, cfg: TrainConfig, lr: float, l0: float):
        self.model = model
        self.cfg = cfg
        self.lr = lr
        self.l0 = l0
        self.params = list(model.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
        # the same parameters and floor directions as the trainer (the table is not what is timed)
        self.targets = [(t.param, t.floor, t.floor_dim) for t in WeightSparsifier(model, cfg.floor).targets]

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        loss = replication_loss(self.model, tokens)
        loss.backward()
        total = 0.0
        n = 0
        for p in self.params:  # a .item() per parameter
            total += p.grad.pow(2).sum().item()
            n += p.grad.numel()
        rms = (total / n) ** 0.5
        for p in self.params:
            p.grad.div_(rms)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for w, floor, floor_dim in self.targets:
                k = round(self.l0 * w.numel())
                mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
                mask[torch.topk(w.abs().flatten(), k).indices] = True
                mask = mask.view_as(w)
                slices = w if floor_dim == 0 else w.T  # the floor: top-|w| of every row (column)
                slice_mask = mask if floor_dim == 0 else mask.T
                slice_mask.scatter_(1, torch.topk(slices.abs(), min(floor, slices.shape[1]), dim=1).indices, True)
                w.mul_(mask)
                if w.dim() >= 2:
                    w.mul_(1 - self.lr * self.cfg.weight_decay)
        return loss.detach()


def timed(fn, tokens: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of ``fn(tokens)``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    fn(tokens)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu


def share_outside_matmuls(fn, tokens: torch.Tensor) -> tuple[float, float]:
    """Fractions of ``fn(tokens)``'s self CPU time in ops other than :data:`MATMUL_OPS`, and other
    than those and :data:`FUSED_ATTENTION_OPS` (attention's matmuls and softmax in one kernel)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(tokens)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    attention = sum(e.self_cpu_time_total for e in events if e.key in FUSED_ATTENTION_OPS)
    return 1 - matmul / total, 1 - (matmul + attention) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--n-ctx", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--l0", type=float, default=1 / 16)
    parser.add_argument("--steps", type=int, default=7, help="timed steps of each (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--data-threads", type=int, default=None,
                        help="the trainer's data_threads (default: its own choice, the thread count on a CPU; 1: no split)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    model_cfg = SparseTransformerConfig(
        n_layers=args.n_layers, d_model=args.d_model, n_ctx=args.n_ctx, d_vocab=2048, seed=0, device=str(device)
    )
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 2048, (args.batch * 4, args.n_ctx), generator=gen)
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = TrainConfig(
            model=model_cfg, n_steps=100, batch_size=args.batch, l0_target=args.l0, device=str(device),
            out_dir=out_dir, progress=False, bf16=False, data_threads=args.data_threads,
        )
        trainer = Trainer(cfg, tokens=TokenSplits(train=tokens, val=tokens[: args.batch]))
        trainer.step = cfg.n_steps // 2 + 1  # past the anneal: the L0 is the target
        lr, l0 = trainer.lr_at(trainer.step), trainer.l0_at(trainer.step)
        trainer.sparsifier.apply(l0)
        baseline = BaselineStep(copy.deepcopy(trainer.model), cfg, lr, l0)
        batch = tokens[: args.batch].to(device)
        with torch.no_grad():  # the same model: the same loss, up to rounding and top-k tie order
            ours_loss, base_loss = trainer.model(batch, return_type="loss"), replication_loss(baseline.model, batch)
            assert torch.allclose(ours_loss, base_loss, rtol=1e-3), (ours_loss, base_loss)

        def ours(t: torch.Tensor) -> None:
            trainer.step = cfg.n_steps // 2 + 1  # keep the schedule point fixed across repeats
            trainer.train_step(t)

        for _ in range(2):  # warm-up (allocator, Adam state, kernel compilation)
            ours(batch)
            baseline(batch)
        times = {"weight-sparse trainer": [], "baseline": []}
        for _ in range(args.steps):
            times["weight-sparse trainer"].append(timed(ours, batch, device))
            times["baseline"].append(timed(baseline, batch, device))
        outside = share_outside_matmuls(ours, batch) if device.type == "cpu" else None

    wall = {name: statistics.median(t[0] for t in ts) for name, ts in times.items()}
    cpu = {name: statistics.median(t[1] for t in ts) for name, ts in times.items()}
    print(
        f"d_model {args.d_model}, {args.n_layers} layers, d_mlp {model_cfg.d_mlp}, d_vocab 2048, batch "
        f"{args.batch} x {args.n_ctx} tokens, L0 {l0:g}, {args.device}, {torch.get_num_threads()} threads, "
        f"the trainer's batch split over {trainer.data_threads} thread(s)"
    )
    for name in times:
        print(f"  {name:<22} {wall[name] * 1e3:9.1f} ms/step wall, {cpu[name] * 1e3:9.1f} ms CPU (medians of {args.steps})")
    ours, base = "weight-sparse trainer", "baseline"
    print(f"  speed-up: {wall[base] / wall[ours]:.2f}x wall, {cpu[base] / cpu[ours]:.2f}x CPU time")
    if outside is not None:
        print(f"  our step outside matmuls ({', '.join(MATMUL_OPS)}): {100 * outside[0]:.0f}% of self CPU time; "
              f"outside matmuls and fused attention: {100 * outside[1]:.0f}%")


if __name__ == "__main__":
    main()
