"""Next-token cross-entropy with a one-pass backward (the largest tensor of a step is the logits).

``F.cross_entropy`` writes the full log-softmax in the forward, then in the backward a zero-filled
one-hot gradient and the log-softmax's gradient: four passes over ``[tokens, d_vocab]``. Here the
forward keeps only the log-sum-exp per row and the backward writes ``softmax - onehot`` once.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.autograd.function import once_differentiable

#: the target id whose row contributes no loss and no gradient (``F.cross_entropy``'s default)
IGNORE_INDEX = -100


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: Float[Tensor, "n d_vocab"], targets: Int[Tensor, " n"]) -> Float[Tensor, " n"]:
        lse = torch.logsumexp(logits, dim=-1)
        valid = targets != IGNORE_INDEX
        safe = torch.where(valid, targets, 0)
        nll = torch.where(valid, lse - logits.gather(1, safe[:, None]).squeeze(1), 0.0)
        ctx.save_for_backward(logits, lse, safe, valid)
        return nll

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_nll: Float[Tensor, " n"]) -> tuple[Tensor, None]:
        logits, lse, safe, valid = ctx.saved_tensors
        g = torch.where(valid, grad_nll, 0.0)[:, None]
        grad = torch.sub(logits, lse[:, None]).exp_().mul_(g)
        return grad.scatter_add_(1, safe[:, None], -g), None


def cross_entropy_per_row(logits: Float[Tensor, "n d_vocab"], targets: Int[Tensor, " n"]) -> Float[Tensor, " n"]:
    """``F.cross_entropy(logits, targets, reduction="none")`` in fp32 (0 where ``targets`` is -100).

    Raises:
        ValueError: shapes that do not pair one target with each row, or a target outside the vocabulary.
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy_per_row: expected logits [n, d_vocab] and targets [n], got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    return _CrossEntropy.apply(logits.float(), targets)
