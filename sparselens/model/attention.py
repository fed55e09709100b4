"""Causal self-attention with optional per-head sink and AbsTopK on Q, K, V."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from sparselens.config import SparseTransformerConfig
from sparselens.model.abstopk import AbsTopK
from sparselens.model.hook_point import CheckedHookPoint
from sparselens.model.linear import Linear


class Attention(nn.Module):
    """Multi-head causal attention over the (already normed and sparsified) residual read.

    Q, K and V each get AbsTopK taken jointly over all heads' channels. With ``cfg.attn_sink``
    every head has a learnable logit ``sink_logit[h]`` for an always-visible slot with key 0 and
    value 0: it only adds ``exp(sink_logit)`` to the softmax denominator. ``hook_pattern`` holds
    the attention on real keys (rows sum to one minus the sink's share); ``hook_sink`` holds
    that share [batch head_index query_pos]. A hook that changes the share at ``hook_sink``
    rescales the real keys' attention to fill the rest (in the model's proportions).

    With ``fused`` on (:meth:`HookedSparseTransformer.fused_attention`, which the trainer uses), no
    sink, and no hook (forward or backward) at ``hook_attn_scores`` or ``hook_pattern``, the scores
    and pattern are never materialised: torch's fused causal ``scaled_dot_product_attention``
    computes ``z``, the same product to rounding (not bit for bit, hence off by default: a hooked
    and an unhooked run then agree exactly). A hook there (``run_with_cache`` adds them) brings
    the explicit computation back.

    Weights are stored in ``F.linear`` layout (``q_proj.weight`` is [n_heads*d_head, d_model]);
    ``W_Q``, ``W_K``, ``W_V``, ``W_O`` and biases are TransformerLens-shaped views.
    """

    causal_mask: Tensor  # buffer [n_ctx, n_ctx], True on and below the diagonal
    fused: bool = False  # use the fused kernel where nothing needs the pattern (see the class docstring)

    def __init__(self, cfg: SparseTransformerConfig):
        super().__init__()
        self.cfg = cfg
        d_qkv = cfg.d_qkv
        self.q_proj = Linear(cfg.d_model, d_qkv, bias=cfg.use_bias, dtype=cfg.dtype)
        self.k_proj = Linear(cfg.d_model, d_qkv, bias=cfg.use_bias, dtype=cfg.dtype)
        self.v_proj = Linear(cfg.d_model, d_qkv, bias=cfg.use_bias, dtype=cfg.dtype)
        self.o_proj = Linear(d_qkv, cfg.d_model, bias=cfg.use_bias, dtype=cfg.dtype)
        self.sink_logit = nn.Parameter(torch.zeros(cfg.n_heads, dtype=cfg.dtype)) if cfg.attn_sink else None
        self.topk_q = AbsTopK(cfg.abstopk_k("q", d_qkv), "q")
        self.topk_k = AbsTopK(cfg.abstopk_k("k", d_qkv), "k")
        self.topk_v = AbsTopK(cfg.abstopk_k("v", d_qkv), "v")

        self.hook_q = CheckedHookPoint()  # [batch, pos, head_index, d_head]
        self.hook_k = CheckedHookPoint()
        self.hook_v = CheckedHookPoint()
        self.hook_attn_scores = CheckedHookPoint()  # [batch, head_index, query_pos, key_pos]
        self.hook_pattern = CheckedHookPoint()
        self.hook_z = CheckedHookPoint()  # [batch, pos, head_index, d_head]
        if cfg.attn_sink:
            self.hook_sink = CheckedHookPoint()  # [batch, head_index, query_pos]
        self.register_buffer(
            "causal_mask", torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool).tril(), persistent=False
        )

    def _heads(self, x: Float[Tensor, "batch pos d_qkv"]) -> Float[Tensor, "batch pos head_index d_head"]:
        return x.view(*x.shape[:-1], self.cfg.n_heads, self.cfg.d_head)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        q = self.hook_q(self._heads(self.topk_q(self.q_proj(x))))
        k = self.hook_k(self._heads(self.topk_k(self.k_proj(x))))
        v = self.hook_v(self._heads(self.topk_v(self.v_proj(x))))

        if self.fused and self.sink_logit is None and not (self.hook_attn_scores.is_hooked or self.hook_pattern.is_hooked):
            z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            z = self.hook_z(z.transpose(1, 2))
            return self.o_proj(z.reshape(*z.shape[:2], self.cfg.d_qkv))
        scores = self.hook_attn_scores(self._causal_scores(q, k))
        if self.sink_logit is None:
            pattern = scores.softmax(dim=-1)
        else:
            sink = self.sink_logit.to(scores.dtype).view(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
            probs = torch.cat([sink, scores], dim=-1).softmax(dim=-1)
            pattern = probs[..., 1:]
            if self.hook_sink.has_forward_hooks:
                # honour a hook's sink share (returned or edited in place): the real keys share the
                # rest in the model's proportions; an unchanged share multiplies them by exactly 1
                share = probs[..., 0].clone()
                patched = self.hook_sink(probs[..., 0].clone())
                pattern = pattern * ((1 - patched) / (1 - share).clamp_min(torch.finfo(share.dtype).tiny))[..., None]
            else:
                self.hook_sink(probs[..., 0])
        pattern = self.hook_pattern(pattern)
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        return self.o_proj(z.reshape(*z.shape[:2], self.cfg.d_qkv))

    def _causal_scores(
        self, q: Float[Tensor, "batch pos head_index d_head"], k: Float[Tensor, "batch pos head_index d_head"]
    ) -> Float[Tensor, "batch head_index query_pos key_pos"]:
        """``q.k / sqrt(d_head)``, -inf where the key is after the query.

        One batched matmul whose added term is the causal mask, so the scores (the largest tensor of
        the forward) are written once and never rescaled or masked in another pass, in either
        direction. Equals ``einsum(q, k) / sqrt(d_head)`` then ``masked_fill`` exactly when
        ``d_head`` is a power of 4 (the scale is then a power of 2); to rounding otherwise.
        """
        n_batch, n_pos, n_heads, d_head = q.shape
        causal = torch.zeros(n_pos, n_pos, dtype=q.dtype, device=q.device)
        causal.masked_fill_(~self.causal_mask[:n_pos, :n_pos], float("-inf"))
        q_rows = q.transpose(1, 2).reshape(n_batch * n_heads, n_pos, d_head)
        k_rows = k.transpose(1, 2).reshape(n_batch * n_heads, n_pos, d_head)
        scores = torch.baddbmm(causal, q_rows, k_rows.transpose(1, 2), alpha=1 / math.sqrt(d_head))
        return scores.view(n_batch, n_heads, n_pos, n_pos)

    # ------------------------------------------------------------ TransformerLens-shaped weights
    def _per_head_in(self, linear: nn.Linear) -> Float[Tensor, "head_index d_model d_head"]:
        return linear.weight.T.reshape(self.cfg.d_model, self.cfg.n_heads, self.cfg.d_head).permute(1, 0, 2)

    def _per_head_bias(self, linear: nn.Linear) -> Float[Tensor, "head_index d_head"]:
        if linear.bias is None:
            return torch.zeros(self.cfg.n_heads, self.cfg.d_head, dtype=linear.weight.dtype, device=linear.weight.device)
        return linear.bias.view(self.cfg.n_heads, self.cfg.d_head)

    @property
    def W_Q(self) -> Float[Tensor, "head_index d_model d_head"]:
        return self._per_head_in(self.q_proj)

    @property
    def W_K(self) -> Float[Tensor, "head_index d_model d_head"]:
        return self._per_head_in(self.k_proj)

    @property
    def W_V(self) -> Float[Tensor, "head_index d_model d_head"]:
        return self._per_head_in(self.v_proj)

    @property
    def W_O(self) -> Float[Tensor, "head_index d_head d_model"]:
        return self.o_proj.weight.T.reshape(self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model)

    @property
    def b_Q(self) -> Float[Tensor, "head_index d_head"]:
        return self._per_head_bias(self.q_proj)

    @property
    def b_K(self) -> Float[Tensor, "head_index d_head"]:
        return self._per_head_bias(self.k_proj)

    @property
    def b_V(self) -> Float[Tensor, "head_index d_head"]:
        return self._per_head_bias(self.v_proj)

    @property
    def b_O(self) -> Float[Tensor, " d_model"]:
        if self.o_proj.bias is None:
            return torch.zeros(self.cfg.d_model, dtype=self.o_proj.weight.dtype, device=self.o_proj.weight.device)
        return self.o_proj.bias
