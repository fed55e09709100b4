"""The MLP: ``W_out @ AbsTopK(act(W_in @ x + b_in)) + b_out``."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from sparselens.config import SparseTransformerConfig
from sparselens.model.abstopk import AbsTopK
from sparselens.model.hook_point import CheckedHookPoint
from sparselens.model.linear import Linear

_ACT_FNS: dict[str, Callable[[Tensor], Tensor]] = {"gelu": F.gelu, "relu": F.relu}


class MLP(nn.Module):
    """Two-layer MLP with AbsTopK on the neurons after the activation function.

    Hooks: ``hook_pre`` [batch pos d_mlp] before the activation, ``hook_post`` [batch pos d_mlp]
    after the activation and AbsTopK (the neuron node site). ``W_in`` [d_model, d_mlp] and
    ``W_out`` [d_mlp, d_model] are TransformerLens-shaped views of ``fc_in``/``fc_out``.
    """

    def __init__(self, cfg: SparseTransformerConfig):
        super().__init__()
        self.cfg = cfg
        d_mlp = cfg.d_mlp
        assert d_mlp is not None, "SparseTransformerConfig.__post_init__ sets d_mlp"
        self.fc_in = Linear(cfg.d_model, d_mlp, bias=cfg.use_bias, dtype=cfg.dtype)
        self.fc_out = Linear(d_mlp, cfg.d_model, bias=cfg.use_bias, dtype=cfg.dtype)
        self.act_fn = _ACT_FNS[cfg.act_fn]
        self.topk_neuron = AbsTopK(cfg.abstopk_k("neuron", d_mlp), "neuron")
        self.hook_pre = CheckedHookPoint()
        self.hook_post = CheckedHookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        pre = self.hook_pre(self.fc_in(x))
        post = self.hook_post(self.topk_neuron(self.act_fn(pre)))
        return self.fc_out(post)

    @property
    def W_in(self) -> Float[Tensor, "d_model d_mlp"]:
        return self.fc_in.weight.T

    @property
    def W_out(self) -> Float[Tensor, "d_mlp d_model"]:
        return self.fc_out.weight.T

    @property
    def b_in(self) -> Float[Tensor, " d_mlp"]:
        if self.fc_in.bias is None:
            return torch.zeros(self.cfg.d_mlp, dtype=self.fc_in.weight.dtype, device=self.fc_in.weight.device)
        return self.fc_in.bias

    @property
    def b_out(self) -> Float[Tensor, " d_model"]:
        if self.fc_out.bias is None:
            return torch.zeros(self.cfg.d_model, dtype=self.fc_out.weight.dtype, device=self.fc_out.weight.device)
        return self.fc_out.bias
