"""The weight sparsifier: per-matrix top-|w| with a floor per neuron (METHOD.md section 2).

After every optimizer step each sparsified parameter keeps its ``round(L0 * numel)`` entries of
largest magnitude and the rest are set to zero. Before that per-matrix top-k, every neuron /
attention channel protects its own ``floor`` (default 4) largest entries; protected entries count
towards the ``k`` (so a matrix holds ``max(k, n_protected)`` nonzeros). The selection itself is
:func:`sparselens.kernels.weight_topk_mask` (no host synchronisation).

Which parameters, and which slices get the floor (``nn.Linear`` weights are ``[out, in]``):

* ``attn.q_proj``, ``k_proj``, ``v_proj``, ``mlp.fc_in``: per row (``floor_dim=0``); a row is one
  Q/K/V channel's or one MLP neuron's reads.
* ``attn.o_proj``, ``mlp.fc_out``: per column (``floor_dim=1``); a column is one head channel's or
  one MLP neuron's writes.
* ``embed.W_E`` [d_vocab d_model], ``unembed.weight`` [d_vocab d_model], ``pos_embed.W_pos``
  [n_ctx d_model]: per row, so every token keeps >= floor residual writes, every logit >= floor
  residual reads, every position >= floor writes.
* biases and ``unembed.b_U``: only with ``sparsify_biases``, no floor.

The embedding convention (one row per token, and per logit, is a "neuron" of the embedding) means
no token becomes unreadable and no logit becomes a constant. Norm gains (``*.w``), attention sink
logits and the bigram table stay dense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from sparselens import kernels
from sparselens.wiring import BLOCK_WIRING

#: parameter-name suffix -> the dim whose slices get the floor (0: rows, 1: columns): the block's
#: weights from the wiring table, then the embeddings (one row per token / logit / position)
_FLOOR_DIM = {
    **{wire.param: wire.floor_dim for wire in BLOCK_WIRING},
    "embed.W_E": 0,
    "unembed.weight": 0,
    "pos_embed.W_pos": 0,
}
_BIASES = (".bias", "unembed.b_U")
_DENSE = ("ln1.w", "ln2.w", "ln_final.w", "attn.sink_logit", "bigram.table")


@dataclass(frozen=True)
class SparseTarget:
    """One parameter the sparsifier prunes, seen as a matrix ``[rows, cols]``.

    Attributes:
        name: the parameter's name in ``model.named_parameters()``.
        param: the parameter itself (a bias ``[n]`` is handled as ``[1, n]``).
        floor: entries protected per slice.
        floor_dim: 0 protects per row, 1 per column.
    """

    name: str
    param: nn.Parameter
    floor: int
    floor_dim: int

    def matrix(self) -> Float[Tensor, "rows cols"]:
        """The parameter as a 2-D view sharing its storage."""
        return self.param.view(1, -1) if self.param.dim() == 1 else self.param

    def n_keep(self, l0: float) -> int:
        """``k``: entries the per-matrix top-k keeps at L0 fraction ``l0`` (round half up)."""
        return min(self.param.numel(), int(math.floor(l0 * self.param.numel() + 0.5)))

    def n_protected(self) -> int:
        """Entries the floor protects: ``n_slices * min(floor, slice_len)``."""
        rows, cols = self.matrix().shape
        n_slices, slice_len = (rows, cols) if self.floor_dim == 0 else (cols, rows)
        return n_slices * min(self.floor, slice_len)

    def expected_nonzeros(self, l0: float) -> int:
        """Nonzeros after sparsification at ``l0`` (if no kept entry happens to be exactly zero)."""
        return max(self.n_keep(l0), self.n_protected())


class WeightSparsifier:
    """Prunes a model's weights in place to the current L0 fraction.

    Args:
        model: a :class:`~sparselens.HookedSparseTransformer` (or a module with the same parameter
            names). Every parameter must be known to the table in the module docstring: a new
            parameter kind raises instead of silently staying dense.
        floor: entries protected per neuron / channel / token row (METHOD: 4).
        sparsify_biases: also prune each bias vector (no floor) to the same fraction.

    Examples:
        >>> sparsifier = WeightSparsifier(model, floor=4)
        >>> sparsifier.apply(0.25)  # every matrix now has max(round(0.25 * numel), floor rows) nonzeros
    """

    def __init__(self, model: nn.Module, floor: int = 4, sparsify_biases: bool = False):
        self.targets: list[SparseTarget] = []
        for name, param in model.named_parameters():
            floor_dim = next((d for suffix, d in _FLOOR_DIM.items() if name.endswith(suffix)), None)
            if floor_dim is not None:
                self.targets.append(SparseTarget(name, param, floor, floor_dim))
            elif name.endswith(_BIASES):
                if sparsify_biases:
                    self.targets.append(SparseTarget(name, param, 0, 0))
            elif not name.endswith(_DENSE):
                raise ValueError(
                    f"WeightSparsifier does not know whether to sparsify parameter {name!r} "
                    f"{tuple(param.shape)}; add it to sparselens/train/sparsifier.py"
                )

    @torch.no_grad()
    def apply(self, l0: float) -> None:
        """Zero every target's entries outside its top-``l0`` selection (in place, no host sync).

        The selections are :func:`sparselens.kernels.weight_topk_masks`: on the CPU, on all of torch's
        threads at once (the result does not depend on the thread count).
        """
        jobs = [(target, k) for target in self.targets if (k := target.n_keep(l0)) < target.param.numel()]  # dense: nothing to prune
        matrices = [target.matrix() for target, _ in jobs]
        masks = kernels.weight_topk_masks([(w, k, t.floor, t.floor_dim) for w, (t, k) in zip(matrices, jobs)])
        for w, mask in zip(matrices, masks):
            w.masked_fill_(~mask, 0.0)

    @torch.no_grad()
    def nonzero_fractions(self) -> Float[Tensor, " n_targets"]:
        """Actual nonzero fraction of each target, in ``self.targets`` order (stays on device)."""
        return torch.stack([(t.param != 0).sum().float() / t.param.numel() for t in self.targets])
