"""``Linear``: the model's ``nn.Linear``, its product computed from the weight's nonzeros where that pays."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn

from sparselens.kernels import linear


class Linear(nn.Linear):
    """An ``nn.Linear`` (same parameters, state dict and initialisation) whose forward is
    :func:`sparselens.kernels.linear`: on the CPU a weight with few nonzeros is multiplied by walking
    them, elsewhere (or for a dense weight) it is ``F.linear``."""

    def forward(self, x: Float[Tensor, "... in_features"]) -> Float[Tensor, "... out_features"]:
        return linear(x, self.weight, self.bias)
