"""One pre-norm transformer block with its residual hook points and AbsTopK sites."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn

from sparselens.config import SparseTransformerConfig
from sparselens.model.abstopk import AbsTopK
from sparselens.model.attention import Attention
from sparselens.model.hook_point import CheckedHookPoint
from sparselens.model.mlp import MLP
from sparselens.model.rms_norm import RMSNorm


class TransformerBlock(nn.Module):
    """``resid_mid = resid_pre + AbsTopK(attn(AbsTopK(ln1(resid_pre))))``, then the same for the MLP.

    Node hook points (post-AbsTopK, what downstream layers read): ``hook_attn_in``,
    ``hook_attn_out``, ``hook_mlp_in``, ``hook_mlp_out`` [batch pos d_model], plus ``attn.hook_q``/
    ``hook_k``/``hook_v`` and ``mlp.hook_post`` inside the sublayers.
    """

    def __init__(self, cfg: SparseTransformerConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.ln1 = RMSNorm(cfg.d_model, cfg.eps)
        self.ln2 = RMSNorm(cfg.d_model, cfg.eps)
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.topk_attn_in = AbsTopK(cfg.abstopk_k("attn_in", cfg.d_model), "attn_in")
        self.topk_attn_out = AbsTopK(cfg.abstopk_k("attn_out", cfg.d_model), "attn_out")
        self.topk_mlp_in = AbsTopK(cfg.abstopk_k("mlp_in", cfg.d_model), "mlp_in")
        self.topk_mlp_out = AbsTopK(cfg.abstopk_k("mlp_out", cfg.d_model), "mlp_out")

        self.hook_resid_pre = CheckedHookPoint()
        self.hook_attn_in = CheckedHookPoint()
        self.hook_attn_out = CheckedHookPoint()
        self.hook_resid_mid = CheckedHookPoint()
        self.hook_mlp_in = CheckedHookPoint()
        self.hook_mlp_out = CheckedHookPoint()
        self.hook_resid_post = CheckedHookPoint()

    def forward(self, resid_pre: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        resid_pre = self.hook_resid_pre(resid_pre)
        attn_in = self.hook_attn_in(self.topk_attn_in(self.ln1(resid_pre)))
        attn_out = self.hook_attn_out(self.topk_attn_out(self.attn(attn_in)))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_in = self.hook_mlp_in(self.topk_mlp_in(self.ln2(resid_mid)))
        mlp_out = self.hook_mlp_out(self.topk_mlp_out(self.mlp(mlp_in)))
        return self.hook_resid_post(resid_mid + mlp_out)
