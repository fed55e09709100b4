"""What do hook points cost? Ratio of HookedSparseTransformer's forward to the same computation without them.

The baseline below is the model's computation written out with the same weights and the same ops
(``sparselens.kernels``, ``F.linear``, the same einsums) but no hook points, so the ratio isolates
the hooks. Both run in this process, interleaved, and the median of many runs is reported.

    python benchmarks/hook_overhead.py                 # d_model 256, 4 layers, batch 8 x 128, CPU
    python benchmarks/hook_overhead.py --device cuda

Target (issue 2): idle hook points within 5% of the baseline.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from sparselens import HookedSparseTransformer, SparseTransformerConfig, kernels


def forward_without_hooks(model: HookedSparseTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """The model's computation with no hook points (for this benchmark only)."""
    cfg = model.cfg

    def topk(module, x):
        return x if module.k is None else kernels.abstopk(x, module.k)

    resid = model.embed.W_E[tokens]
    n_pos = tokens.shape[1]
    for block in model.blocks:
        attn = block.attn
        x = topk(block.topk_attn_in, kernels.rms_norm(resid, block.ln1.w, cfg.eps)[0])
        q = topk(attn.topk_q, attn.q_proj(x)).view(*x.shape[:2], cfg.n_heads, cfg.d_head)
        k = topk(attn.topk_k, attn.k_proj(x)).view(*x.shape[:2], cfg.n_heads, cfg.d_head)
        v = topk(attn.topk_v, attn.v_proj(x)).view(*x.shape[:2], cfg.n_heads, cfg.d_head)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(cfg.d_head)
        scores = scores.masked_fill(~attn.causal_mask[:n_pos, :n_pos], float("-inf"))
        z = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v)
        resid = resid + topk(block.topk_attn_out, attn.o_proj(z.reshape(*z.shape[:2], cfg.d_qkv)))
        x = topk(block.topk_mlp_in, kernels.rms_norm(resid, block.ln2.w, cfg.eps)[0])
        post = topk(block.mlp.topk_neuron, F.gelu(block.mlp.fc_in(x)))
        resid = resid + topk(block.topk_mlp_out, block.mlp.fc_out(post))
    return model.unembed(kernels.rms_norm(resid, model.ln_final.w, cfg.eps)[0])


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pos", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median round is reported")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cfg = SparseTransformerConfig(n_layers=args.n_layers, d_model=args.d_model, n_ctx=args.pos, seed=0, device=args.device)
    model = HookedSparseTransformer(cfg).eval()
    tokens = torch.randint(0, cfg.d_vocab, (args.batch, args.pos), device=args.device)
    with torch.inference_mode():
        assert torch.equal(model(tokens), forward_without_hooks(model, tokens)), "baseline must compute the same logits"
        runs = {
            "baseline (no hook points)": lambda: forward_without_hooks(model, tokens),
            "forward, hook points idle": lambda: model(tokens),
            "run_with_cache, every hook": lambda: model.run_with_cache(tokens),
        }
        for fn in runs.values():  # warm up
            fn()
        rounds = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, fn in runs.items():
                rounds[name].append(median_ms(fn, args.repeats))
    base = statistics.median(rounds["baseline (no hook points)"])
    print(f"d_model {args.d_model}, {args.n_layers} layers, batch {args.batch} x {args.pos} tokens, "
          f"{args.device}, {torch.get_num_threads()} threads, {len(model.hook_dict)} hook points")
    print(f"{'run':<30}{'median ms':>10}{'ratio':>8}")
    for name, values in rounds.items():
        ms = statistics.median(values)
        print(f"{name:<30}{ms:>10.2f}{ms / base:>8.3f}")


if __name__ == "__main__":
    main()
