"""Divergences between a model's and a circuit's next-token distributions (exact, full vocabulary)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def kl(p_logits: Float[Tensor, "... d_vocab"], q_logits: Float[Tensor, "... d_vocab"]) -> Float[Tensor, "..."]:
    """``KL(p || q)`` per row, in nats, over the whole vocabulary (computed in fp32 at least)."""
    p_log = F.log_softmax(p_logits.float(), dim=-1)
    q_log = F.log_softmax(q_logits.float(), dim=-1)
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def js(p: Float[Tensor, "... n"], q: Float[Tensor, "... n"]) -> Float[Tensor, "..."]:
    """Jensen-Shannon divergence (nats, in ``[0, log 2]``) between probability vectors along the last dim."""
    p, q = p.float(), q.float()
    m = (p + q) / 2

    def part(a: Tensor) -> Tensor:
        return torch.where(a > 0, a * (a.clamp_min(1e-30).log() - m.clamp_min(1e-30).log()), torch.zeros_like(a)).sum(-1)

    return (part(p) + part(q)) / 2


def entropy(p: Float[Tensor, "... n"]) -> Float[Tensor, "..."]:
    """Shannon entropy (nats) of probability vectors along the last dim."""
    p = p.float()
    return -torch.where(p > 0, p * p.clamp_min(1e-30).log(), torch.zeros_like(p)).sum(-1)
