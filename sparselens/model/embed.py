"""Token and positional embeddings, and the unembedding (with optional bigram table)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from sparselens.config import SparseTransformerConfig
from sparselens.kernels import linear


class Embed(nn.Module):
    """``W_E[tokens]``; ``W_E`` is [d_vocab, d_model] as in TransformerLens."""

    def __init__(self, cfg: SparseTransformerConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model, dtype=cfg.dtype))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    """Learned positional embedding ``W_pos[:pos]``; ``W_pos`` is [n_ctx, d_model]."""

    def __init__(self, cfg: SparseTransformerConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model, dtype=cfg.dtype))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "1 pos d_model"]:
        return self.W_pos[: tokens.shape[-1]].unsqueeze(0)


class Unembed(nn.Module):
    """``x @ W_U + b_U``; ``W_U`` is [d_model, d_vocab] as in TransformerLens.

    The weight is stored as ``weight`` [d_vocab, d_model] (``F.linear`` layout); ``W_U`` is a view.
    ``b_U`` always exists (zero unless trained or loaded, e.g. a released ``final_logits_bias``).
    """

    def __init__(self, cfg: SparseTransformerConfig):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model, dtype=cfg.dtype))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab, dtype=cfg.dtype))

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.weight.T

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return linear(x, self.weight, self.b_U)


class BigramTable(nn.Module):
    """A dense ``d_vocab x d_vocab`` table whose row for the current token is added to the logits."""

    def __init__(self, cfg: SparseTransformerConfig):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(cfg.d_vocab, cfg.d_vocab, dtype=cfg.dtype))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.table[tokens]
