"""RMSNorm that exposes its scale at a hook point, so norms can be frozen by patching the scale."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from sparselens import kernels
from sparselens.model.hook_point import CheckedHookPoint


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x**2) + eps) * w``.

    Hooks: ``hook_scale`` [batch pos 1] is the denominator (as in TransformerLens); whatever a hook
    leaves there (a returned tensor, or the scale edited in place: frozen norms) is what the norm
    divides by. ``hook_normalized`` [batch pos d_model] is the norm's output.
    """

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.hook_scale = CheckedHookPoint()
        self.hook_normalized = CheckedHookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        out, scale = kernels.rms_norm(x, self.w, self.eps)
        if self.hook_scale.has_forward_hooks:  # a hook may replace the scale or edit it in place
            out = kernels.rms_norm_frozen(x, self.w, self.hook_scale(scale.clone()))  # a copy: editable in place
        return self.hook_normalized(out)
