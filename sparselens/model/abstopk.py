"""AbsTopK activation sparsity as a module (METHOD.md section 1)."""

from __future__ import annotations

from typing import Optional

from jaxtyping import Float
from torch import Tensor, nn

from sparselens import kernels


class AbsTopK(nn.Module):
    """Keep the ``k`` largest-magnitude entries per token over the last dim; identity if k is None.

    Args:
        k: entries kept per token, or None for no sparsity at this site.
        site: the site's name (one of ``sparselens.config.ABSTOPK_SITES``), for repr and errors.
    """

    def __init__(self, k: Optional[int], site: str):
        super().__init__()
        self.k = k
        self.site = site

    def forward(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
        if self.k is None:
            return x
        return kernels.abstopk(x, self.k)

    def extra_repr(self) -> str:
        return f"site={self.site!r}, k={self.k}"
