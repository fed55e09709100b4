"""How fast is one step of the weight-sparse trainer? Ratio against a straightforward implementation.

The baseline below is the recipe as the best-known public replication writes it: the same model
(dense matmuls) and the same Adam, but the gradient norm is summed from a ``.item()`` per parameter,
and each matrix is masked with ``torch.topk`` over the whole matrix plus the floor rule applied
row by row (column by column) in a Python loop. Both steps run in this process on the same config,
the same starting weights and the same batch, interleaved; the median of several steps is reported.

    python benchmarks/train_step.py                  # d_model 256, 4 layers, L0 1/16, batch 8 x 128, CPU
    python benchmarks/train_step.py --batch 32 --device cuda

Target (issue 3): at least 1.5x faster than the baseline on CPU at d_model 256, 4 layers, L0 1/16.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch

from sparselens import HookedSparseTransformer, SparseTransformerConfig
from sparselens.train import TrainConfig, Trainer, TokenSplits
from sparselens.train.sparsifier import WeightSparsifier


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
        loss = self.model(tokens, return_type="loss")
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
                slices = w if floor_dim == 0 else w.T
                slice_mask = mask if floor_dim == 0 else mask.T
                for i in range(slices.shape[0]):  # the floor, one neuron at a time
                    slice_mask[i, torch.topk(slices[i].abs(), min(floor, slices.shape[1])).indices] = True
                w.mul_(mask)
                if w.dim() >= 2:
                    w.mul_(1 - self.lr * self.cfg.weight_decay)
        return loss.detach()


def timed(fn, tokens: torch.Tensor, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(tokens)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


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
            out_dir=out_dir, progress=False, bf16=False,
        )
        trainer = Trainer(cfg, tokens=TokenSplits(train=tokens, val=tokens[: args.batch]))
        trainer.step = cfg.n_steps // 2 + 1  # past the anneal: the L0 is the target
        lr, l0 = trainer.lr_at(trainer.step), trainer.l0_at(trainer.step)
        trainer.sparsifier.apply(l0)
        baseline = BaselineStep(copy.deepcopy(trainer.model), cfg, lr, l0)
        batch = tokens[: args.batch].to(device)

        def ours(t: torch.Tensor) -> None:
            trainer.step = cfg.n_steps // 2 + 1  # keep the schedule point fixed across repeats
            trainer.train_step(t)

        for _ in range(2):  # warm-up (allocator, Adam state)
            ours(batch)
            baseline(batch)
        times = {"weight-sparse trainer": [], "baseline": []}
        for _ in range(args.steps):
            times["weight-sparse trainer"].append(timed(ours, batch, device))
            times["baseline"].append(timed(baseline, batch, device))

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print(
        f"d_model {args.d_model}, {args.n_layers} layers, d_mlp {model_cfg.d_mlp}, d_vocab 2048, batch "
        f"{args.batch} x {args.n_ctx} tokens, L0 {l0:g}, {args.device}, {torch.get_num_threads()} threads"
    )
    for name, value in medians.items():
        print(f"  {name:<22} {value * 1e3:9.1f} ms/step (median of {args.steps})")
    print(f"  speed-up: {medians['baseline'] / medians['weight-sparse trainer']:.2f}x")


if __name__ == "__main__":
    main()
