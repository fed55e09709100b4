"""Data parallelism over CPU threads inside one process: a batch's forward and backward in shards at once.

On a CPU torch splits each op over its intra-op threads. That pays for large matmuls, not for the
many small ops of a weight-sparse step: the numba kernels (AbsTopK, RMSNorm, the nonzero linear)
run serially at training sizes, and small elementwise ops do not halve. Here the batch is split
into one shard of rows per thread instead. Each shard's forward and backward runs on its own
thread with one intra-op thread (torch ops and the numba kernels release the GIL), and the shards'
gradients are added in shard order, so the same split gives the same bits every time. The result
equals the whole batch's gradient to float rounding.

Measured on the 2-core development CPU (``benchmarks/train_step.py``): see docs/training.md, "Speed".
"""

from __future__ import annotations

import concurrent.futures
import functools
from typing import Callable, Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

#: ``loss_fn(rows) -> the mean loss over those rows`` (every row weighs the same)
LossFn = Callable[[Int[Tensor, "rows pos"]], Float[Tensor, ""]]


@functools.cache
def _pool(n_workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """A process-wide pool for the shards the calling thread does not run itself."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="sparselens-shard")


def _shard_backward(loss_fn: LossFn, rows: Tensor, weight: float, params: Sequence[nn.Parameter]) -> tuple[Tensor, tuple[Optional[Tensor], ...]]:
    """``(weight * loss, its gradients)`` of one shard, computed on this thread with one intra-op thread."""
    torch.set_num_threads(1)  # torch keeps the intra-op thread count per thread (OpenMP's, MKL's)
    loss = weight * loss_fn(rows)
    return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)


def backward_in_threads(
    loss_fn: LossFn, tokens: Int[Tensor, "batch pos"], params: Sequence[nn.Parameter], n_threads: int
) -> Float[Tensor, ""]:
    """Add ``d loss_fn(tokens) / d params`` into the parameters' ``.grad``, the batch split over ``n_threads`` threads.

    The rows of ``tokens`` are split into ``n_threads`` shards of (nearly) equal size; shard ``i``'s
    loss is weighted by its share of the rows, so the weighted sum is the batch's mean loss. The
    calling thread runs the first shard, a pool the rest; torch's intra-op thread count is 1 while
    they run and restored after. Parameters that no shard uses keep their ``.grad``.

    Args:
        loss_fn: the mean loss over a block of rows (e.g. the model's next-token loss).
        tokens: the batch ``[batch, pos]``.
        params: the parameters to differentiate.
        n_threads: shards, and threads running them at once (at most ``batch``).

    Returns:
        The batch's loss (detached, no host sync).
    """
    if not 1 <= n_threads <= tokens.shape[0]:
        raise ValueError(f"backward_in_threads: n_threads must be in [1, batch={tokens.shape[0]}], got {n_threads}")
    shards = list(tokens.tensor_split(n_threads))
    weights = [s.shape[0] / tokens.shape[0] for s in shards]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        futures = [_pool(n_threads - 1).submit(_shard_backward, loss_fn, s, w, params) for s, w in zip(shards[1:], weights[1:])]
        try:
            results = [_shard_backward(loss_fn, shards[0], weights[0], params)]
        finally:
            concurrent.futures.wait(futures)  # never leave a shard running past this call
        results += [f.result() for f in futures]
    finally:
        torch.set_num_threads(previous)
    with torch.no_grad():
        for i, p in enumerate(params):
            grads = [g for g in (shard_grads[i] for _, shard_grads in results) if g is not None]
            if not grads:
                continue
            total = grads[0]
            for g in grads[1:]:  # in shard order: deterministic
                total.add_(g)
            p.grad = total if p.grad is None else p.grad.add_(total)
    loss = results[0][0]
    for other, _ in results[1:]:
        loss = loss + other
    return loss
