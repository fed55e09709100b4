"""A learnable keep/drop mask over every node (METHOD.md section 4).

One parameter ``tau`` per node, shared by every prompt and position. Forward: ``m = 1[tau >= 0]``.
Backward: straight-through with the derivative of ``sigmoid(tau / T)``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from sparselens.nodes import NodeMask, NodeRegistry


class _HeavisideSigmoidSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tau: Tensor, temperature: float) -> Tensor:
        ctx.save_for_backward(tau)
        ctx.temperature = temperature
        return (tau >= 0).to(tau.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (tau,) = ctx.saved_tensors
        s = torch.sigmoid(tau / ctx.temperature)
        return grad * s * (1 - s) / ctx.temperature, None


def _key(site_name: str) -> str:
    return site_name.replace(".", "_")


class LearnedMask(nn.Module):
    """``tau`` per node, keyed by site name; ``masks()`` gives the hard masks with STE gradients.

    Args:
        registry: the model's node registry.
        init_bias: mean of the ``tau`` init (0.1: every node starts kept).
        init_noise: std of the ``tau`` init.
        temperature: sigmoid temperature of the straight-through gradient.
        generator: RNG for the init (pruning is deterministic for a seed).
    """

    def __init__(self, registry: NodeRegistry, init_bias: float = 0.1, init_noise: float = 0.01,
                 temperature: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        self.registry = registry
        self.temperature = temperature
        # ParameterDict keys cannot contain ".", so "L0.q" is stored as "L0_q".
        self._params = nn.ParameterDict({
            _key(site.name): nn.Parameter(init_bias + init_noise * torch.randn(site.n_nodes, generator=generator))
            for site in registry.sites
        })

    @property
    def tau(self) -> dict[str, nn.Parameter]:
        """``tau`` [n_nodes] per site, keyed by site name."""
        return {site.name: self._params[_key(site.name)] for site in self.registry.sites}

    def masks(self) -> dict[str, Float[Tensor, " n_nodes"]]:
        """Hard 0/1 masks per site, differentiable through the straight-through estimator."""
        return {name: _HeavisideSigmoidSTE.apply(tau, self.temperature) for name, tau in self.tau.items()}

    @torch.no_grad()
    def clamp_(self) -> None:
        for tau in self._params.values():
            tau.clamp_(-1.0, 1.0)

    def ranking(self) -> Tensor:
        """Flat node indices (forward order of ``registry.nodes()``), highest ``tau`` first; ties keep forward order."""
        flat = torch.cat([self.tau[s.name].detach() for s in self.registry.sites])
        return torch.sort(flat, descending=True, stable=True).indices

    def top(self, n: int, ranking: Tensor | None = None) -> NodeMask:
        """The mask keeping the ``n`` highest-ranked nodes."""
        ranking = self.ranking() if ranking is None else ranking
        keep = torch.zeros(self.registry.n_nodes, dtype=torch.bool)
        keep[ranking[:n]] = True
        sizes = [s.n_nodes for s in self.registry.sites]
        return NodeMask(self.registry, dict(zip((s.name for s in self.registry.sites), keep.split(sizes))))
