"""``SparseLinear``: a drop-in for a frozen low-density ``nn.Linear``, and ``sparsify_linears``.

The model's forward calls its linears as modules (``self.q_proj(x)``), so swapping a module changes
how the product is computed and nothing else: hook points, caches and TransformerLens-shaped weight
views (``attn.W_Q`` reads ``q_proj.weight``) keep working, and there is still one forward pass.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor, nn

from sparselens.kernels.csr import CSRWeight
from sparselens.kernels.ops import sparse_linear

logger = logging.getLogger("sparselens.kernels")

# Densities at or below which CSR beats dense F.linear, as measured by `benchmarks/kernels.py`
# (docs/performance.md). CPU: torch.sparse_csr on 2 x86_64 cores. CUDA: not measured yet, so
# sparsify_linears converts nothing on CUDA unless it is given max_density.
CPU_CSR_MAX_DENSITY: float = 0.01
CUDA_MAX_DENSITY: Optional[float] = None


class SparseLinear(nn.Module):
    """``x @ W.T + b`` with a frozen ``W`` ``[out_features, in_features]`` stored as CSR.

    ``weight`` is a read-only dense view (rebuilt on access); ``bias`` stays an ``nn.Parameter``.
    The state dict holds the dense ``weight`` and ``bias``, like ``nn.Linear``'s, so checkpoints
    load either way.

    Examples:
        >>> lin = nn.Linear(8, 4)
        >>> with torch.no_grad():
        ...     _ = lin.weight.mul_(torch.rand(4, 8) < 0.2)
        >>> sp = SparseLinear.from_linear(lin)
        >>> torch.allclose(sp(torch.ones(2, 8)), lin(torch.ones(2, 8)), atol=1e-6)
        True
    """

    # buffers set by _pack: the CSR of the weight and of its transpose
    crow: Tensor
    col: Tensor
    values: Tensor
    t_crow: Tensor
    t_col: Tensor
    t_values: Tensor

    def __init__(self, weight: Float[Tensor, "out in"], bias: Optional[Float[Tensor, " out"]] = None):
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"SparseLinear: weight must be [out, in], got shape {tuple(weight.shape)}")
        self.out_features, self.in_features = weight.shape
        self._pack(weight)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "SparseLinear":
        """A ``SparseLinear`` with ``linear``'s weight (zeros dropped) and bias."""
        module = cls(linear.weight, linear.bias)
        if module.bias is not None:
            module.bias.requires_grad_(linear.bias.requires_grad)
        return module

    def _pack(self, weight: Tensor) -> None:
        csr, csr_t = CSRWeight.from_dense(weight), CSRWeight.from_dense(weight.detach().T)
        for prefix, packed in (("", csr), ("t_", csr_t)):
            self.register_buffer(prefix + "crow", packed.crow, persistent=False)
            self.register_buffer(prefix + "col", packed.col, persistent=False)
            self.register_buffer(prefix + "values", packed.values, persistent=False)

    @property
    def csr(self) -> CSRWeight:
        return CSRWeight(self.crow, self.col, self.values, (self.out_features, self.in_features))

    @property
    def csr_t(self) -> CSRWeight:
        return CSRWeight(self.t_crow, self.t_col, self.t_values, (self.in_features, self.out_features))

    @property
    def weight(self) -> Float[Tensor, "out in"]:
        return self.csr.to_dense()

    @property
    def density(self) -> float:
        return self.csr.density

    def forward(self, x: Float[Tensor, "... in"]) -> Float[Tensor, "... out"]:
        return sparse_linear(x, self.csr, self.bias, self.csr_t)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.weight

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = prefix + "weight"
        if key in state_dict:
            weight = state_dict[key]
            if tuple(weight.shape) != (self.out_features, self.in_features):
                error_msgs.append(
                    f"size mismatch for {key}: checkpoint has {tuple(weight.shape)}, "
                    f"this SparseLinear is {(self.out_features, self.in_features)}"
                )
            else:
                self._pack(weight.to(device=self.values.device, dtype=self.values.dtype))
        elif strict:
            missing_keys.append(key)
        rest = {k: v for k, v in state_dict.items() if k != key}
        super()._load_from_state_dict(rest, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, density={self.density:.4f}"
        )


def default_max_density(device: torch.device) -> Optional[float]:
    """The measured crossover density for ``device``'s backend, or None where none was measured."""
    return CPU_CSR_MAX_DENSITY if device.type == "cpu" else CUDA_MAX_DENSITY if device.type == "cuda" else None


def sparsify_linears(model: nn.Module, max_density: Optional[float] = None) -> int:
    """Replace every ``nn.Linear`` in ``model`` whose weight density is at most ``max_density``.

    Args:
        model: any module; its ``nn.Linear`` children are swapped in place for :class:`SparseLinear`.
        max_density: fraction of nonzero weights at or below which a linear is converted. Default:
            the crossover measured for the weights' device (:func:`default_max_density`); where
            none was measured (CUDA so far) nothing is converted and a warning says so.

    Returns:
        The number of linears converted.

    Raises:
        ValueError: ``max_density`` outside ``[0, 1]``.
    """
    if max_density is not None and not 0.0 <= max_density <= 1.0:
        raise ValueError(f"sparsify_linears: max_density must be in [0, 1], got {max_density}")
    converted = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            limit = max_density if max_density is not None else default_max_density(child.weight.device)
            if limit is None:
                logger.warning(
                    "sparsify_linears: no measured sparse/dense crossover for %s; leaving %s dense "
                    "(pass max_density to convert anyway)", child.weight.device, name,
                )
                continue
            density = (child.weight != 0).float().mean().item()
            if density <= limit:
                setattr(parent, name, SparseLinear.from_linear(child))
                converted += 1
    return converted
