"""Time every sparselens kernel against its torch baseline, in one process.

For each op it prints the median time, the achieved bandwidth (memory-bound ops) or FLOP rate
(matmuls), and the ratio to the floor: for memory-bound ops ``(bytes moved / measured copy
bandwidth) / time``, for matmuls ``(useful FLOPs / measured peak matmul rate) / time``; 100% means at
the floor. The implementation timed as "sparselens" is whatever the dispatcher picks for the
device (Triton on CUDA, the torch reference on CPU; ``SPARSELENS_KERNELS`` overrides).

GPU (full shapes, N = 8192 tokens, d in {1024, 4096}, d_mlp = 4d, bf16):

    python benchmarks/kernels.py

CPU (small shapes, fp32; a few minutes on two cores):

    python benchmarks/kernels.py --small

AbsTopK alone at the training shapes ([4096, d], d in {256, 1024}, k = d/4; fp32 and bf16),
forward and forward + backward, against ``torch.topk`` + ``scatter`` (target on CPU: >= 4x):

    python benchmarks/kernels.py --abstopk --threads 2

The linear of a weight-sparse matrix (``sparselens.kernels.linear``: on CPU the numba kernel that
walks the nonzeros) against ``F.linear`` on the same zero-filled weight, at the training shapes of
``benchmarks/train_step.py`` (1024 tokens; d_model 256, d_mlp 1024, d_vocab 2048) and densities
1/16, 1/8, 1/4, forward and forward + backward (gradients for x, W and b):

    python benchmarks/kernels.py --linear --threads 1

Timing on GPU uses ``triton.testing.do_bench`` (median); on CPU a median over repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from sparselens import kernels
from sparselens.kernels import CSRWeight

SPARSE_DENSITIES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


@dataclass
class Shapes:
    n_tokens: int
    d_models: tuple[int, ...]
    weight_topk: tuple[int, int]
    dtype: torch.dtype


FULL = Shapes(n_tokens=8192, d_models=(1024, 4096), weight_topk=(16384, 4096), dtype=torch.bfloat16)
SMALL = Shapes(n_tokens=512, d_models=(256, 1024), weight_topk=(2048, 1024), dtype=torch.float32)


def bench(fns: list[Callable[[], object]], device: torch.device, reps: int) -> list[float]:
    """Median seconds per call of each function in ``fns``.

    GPU: ``triton.testing.do_bench`` (median). CPU: each sample times enough back-to-back calls
    to last ~20 ms, and the functions' samples are interleaved, so a competing process slows all
    of them alike; the median of ``reps`` samples is reported.
    """
    if device.type == "cuda":
        import triton.testing

        return [triton.testing.do_bench(fn, return_mode="median") / 1e3 for fn in fns]
    inner = []
    for fn in fns:  # warm up and calibrate
        start = time.perf_counter()
        fn()
        inner.append(max(1, int(0.02 / max(time.perf_counter() - start, 1e-6))))
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, n, out in zip(fns, inner, samples):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            out.append((time.perf_counter() - start) / n)
    return [statistics.median(out) for out in samples]


def copy_bandwidth(device: torch.device, reps: int) -> float:
    """Bytes per second of a large device-to-device copy (read + write)."""
    n = (1 << 28) if device.type == "cuda" else (1 << 24)
    src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    return 2 * n / bench([lambda: dst.copy_(src)], device, reps)[0]


def matmul_peak(device: torch.device, dtype: torch.dtype, reps: int) -> float:
    """FLOP/s of a large square dense matmul in ``dtype``."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / bench([lambda: a @ b], device, reps)[0]


class Table:
    def __init__(self, bandwidth: float, peak: float):
        self.bandwidth, self.peak = bandwidth, peak
        self.rows: list[str] = []
        print("| op | shape | impl | time (ms) | rate | % of floor |")
        print("|---|---|---|---:|---:|---:|")

    def add(self, op: str, shape: str, impl: str, seconds: float, nbytes: Optional[float] = None, flops: Optional[float] = None) -> None:
        if flops is not None:
            rate, floor = f"{flops / seconds / 1e9:.1f} GFLOP/s", flops / self.peak
        else:
            rate, floor = f"{nbytes / seconds / 1e9:.1f} GB/s", nbytes / self.bandwidth
        row = f"| {op} | {shape} | {impl} | {seconds * 1e3:.3f} | {rate} | {100 * floor / seconds:.1f}% |"
        self.rows.append(row)
        print(row, flush=True)


def run(shapes: Shapes, device: torch.device, reps: int) -> None:
    dtype, n = shapes.dtype, shapes.n_tokens
    size = torch.tensor([], dtype=dtype).element_size()
    gen = torch.Generator(device=device).manual_seed(0)
    bandwidth = copy_bandwidth(device, reps)
    peak = matmul_peak(device, dtype, reps)
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"threads: {torch.get_num_threads()}, dtype: {dtype}")
    print(f"measured copy bandwidth {bandwidth / 1e9:.1f} GB/s, dense matmul peak {peak / 1e9:.1f} GFLOP/s\n")
    table = Table(bandwidth, peak)
    crossovers = {}
    for d in shapes.d_models:
        d_mlp = 4 * d
        x = torch.randn(n, d, device=device, dtype=dtype, generator=gen)
        shape = f"{n}x{d}"
        moved = 2 * x.numel() * size  # read x, write the result

        k = d // 4

        def topk_scatter():
            idx = x.abs().topk(k, dim=-1).indices
            return torch.zeros_like(x).scatter_(-1, idx, x.gather(-1, idx))

        w = torch.ones(d, device=device, dtype=dtype)
        mask = (torch.rand(d, device=device, generator=gen) < 0.5).to(dtype)
        mean = torch.randn(d, device=device, dtype=dtype, generator=gen)
        pairs = [
            ("abstopk k=d/4", lambda: kernels.abstopk(x, k), "torch.topk+scatter", topk_scatter),
            ("rms_norm", lambda: kernels.rms_norm(x, w, 1e-5),
             "torch eager", lambda: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w),
            ("masked_ablate (mean)", lambda: kernels.masked_ablate(x, mask, mean),
             "torch eager", lambda: mask * x + (1 - mask) * mean),
        ]
        for op, ours, baseline_name, baseline in pairs:
            t_ours, t_base = bench([ours, baseline], device, reps)
            table.add(op, shape, "sparselens", t_ours, moved)
            table.add(op, shape, baseline_name, t_base, moved)

        dense_w = torch.randn(d_mlp, d, device=device, dtype=dtype, generator=gen)
        mlp_shape = f"{n}x{d} @ ({d_mlp}x{d}).T"
        (t_dense_full,) = bench([lambda: F.linear(x, dense_w)], device, reps)
        table.add("linear (density 1)", mlp_shape, "dense F.linear", t_dense_full, flops=2 * n * d * d_mlp)
        crossover = 0.0
        for density in SPARSE_DENSITIES:
            wm = dense_w * (torch.rand(d_mlp, d, device=device, generator=gen) < density)
            csr = CSRWeight.from_dense(wm)
            csr_t = CSRWeight.from_dense(wm.T)
            useful = 2 * n * csr.nnz
            t_sparse, t_dense = bench([lambda: kernels.sparse_linear(x, csr, None, csr_t), lambda: F.linear(x, wm)], device, reps)
            table.add(f"sparse_linear density {density}", mlp_shape, "sparselens CSR", t_sparse, flops=useful)
            table.add(f"sparse_linear density {density}", mlp_shape, "dense F.linear", t_dense, flops=useful)
            if t_sparse < t_dense:
                crossover = max(crossover, density)
        crossovers[d] = crossover

    rows, cols = shapes.weight_topk
    wt = torch.randn(rows, cols, device=device, dtype=dtype, generator=gen)
    k = rows * cols // 100
    wshape = f"{rows}x{cols}, k=1%"
    wbytes = wt.numel() * (size + 1)  # read w, write a bool mask
    t_ours, t_base = bench([lambda: kernels.weight_topk_mask(wt, k), lambda: wt.abs().flatten().topk(k)], device, reps)
    table.add("weight_topk_mask floor=4", wshape, "sparselens", t_ours, wbytes)
    table.add("weight_topk_mask floor=4", wshape, "torch.topk (no floor)", t_base, wbytes)

    print("\nsparse_linear beats dense up to density (0 = never, within the densities tried):")
    for d, c in crossovers.items():
        print(f"  d={d}: {c}")


def replication_abstopk(x: torch.Tensor, k: int) -> torch.Tensor:
    """AbsTopK as the public replication writes it."""
    idx = torch.topk(x.abs(), k, dim=-1).indices
    return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))


def run_abstopk(device: torch.device, reps: int, n_rows: int = 4096) -> None:
    """AbsTopK (the dispatcher's pick) vs ``torch.topk`` + ``scatter``: forward, forward + backward."""
    print(f"device: {device}, threads: {torch.get_num_threads()}, {n_rows} rows, k = d/4\n")
    print("| dtype | shape | pass | sparselens (ms) | torch.topk+scatter (ms) | speed-up |")
    print("|---|---|---|---:|---:|---:|")
    gen = torch.Generator(device=device).manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        for d in (256, 1024):
            x = torch.randn(n_rows, d, device=device, generator=gen).to(dtype).requires_grad_()
            g = torch.randn(n_rows, d, device=device, generator=gen).to(dtype)
            k = d // 4
            if dtype == torch.float32:  # no ties in continuous fp32 rows: the same selection
                with torch.no_grad():
                    assert torch.equal(kernels.abstopk(x, k) != 0, replication_abstopk(x, k) != 0)

            def fwd_bwd(fn):
                return lambda: torch.autograd.grad(fn(x, k), x, g)

            with torch.no_grad():
                fwd = bench([lambda: kernels.abstopk(x, k), lambda: replication_abstopk(x, k)], device, reps)
            both = bench([fwd_bwd(kernels.abstopk), fwd_bwd(replication_abstopk)], device, reps)
            for name, (ours, base) in (("forward", fwd), ("forward + backward", both)):
                print(f"| {str(dtype).removeprefix('torch.')} | {n_rows}x{d} | {name} | {ours * 1e3:.2f} | "
                      f"{base * 1e3:.2f} | {base / ours:.1f}x |", flush=True)


def run_linear(device: torch.device, reps: int, n_tokens: int = 1024) -> None:
    """``kernels.linear`` (the dispatcher's pick) vs ``F.linear`` on weights with a fraction of nonzeros."""
    print(f"device: {device}, threads: {torch.get_num_threads()}, {n_tokens} tokens, float32\n")
    print("| density | in -> out | pass | sparselens (ms) | F.linear (ms) | speed-up |")
    print("|---:|---|---|---:|---:|---:|")
    gen = torch.Generator(device=device).manual_seed(0)
    for density in (1 / 16, 1 / 8, 1 / 4):
        for d_in, d_out in ((256, 256), (256, 1024), (1024, 256), (256, 2048)):
            x = torch.randn(n_tokens, d_in, device=device, generator=gen).requires_grad_()
            keep = torch.rand(d_out, d_in, device=device, generator=gen) < density
            w = (torch.randn(d_out, d_in, device=device, generator=gen) * keep).requires_grad_()
            b = torch.randn(d_out, device=device, generator=gen).requires_grad_()
            g = torch.randn(n_tokens, d_out, device=device, generator=gen)
            with torch.no_grad():
                torch.testing.assert_close(kernels.linear(x, w, b), F.linear(x, w, b), atol=1e-4, rtol=1e-4)

            def fwd_bwd(fn):
                return lambda: torch.autograd.grad(fn(x, w, b), (x, w, b), g)

            with torch.no_grad():
                fwd = bench([lambda: kernels.linear(x, w, b), lambda: F.linear(x, w, b)], device, reps)
            both = bench([fwd_bwd(kernels.linear), fwd_bwd(F.linear)], device, reps)
            for name, (ours, base) in (("forward", fwd), ("forward + backward", both)):
                print(f"| {float(keep.float().mean()):.3f} | {d_in} -> {d_out} | {name} | {ours * 1e3:.2f} | "
                      f"{base * 1e3:.2f} | {base / ours:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="small fp32 shapes for a CPU run")
    parser.add_argument("--abstopk", action="store_true", help="only AbsTopK, at the training shapes")
    parser.add_argument("--linear", action="store_true", help="only the weight-sparse linear, at the training shapes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=7, help="repetitions per timing on CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.abstopk:
        run_abstopk(device, args.reps)
    elif args.linear:
        run_linear(device, args.reps)
    else:
        run(SMALL if args.small else FULL, device, args.reps)


if __name__ == "__main__":
    main()
