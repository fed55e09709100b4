"""Per-node means over a reference distribution, for mean ablation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer


@torch.no_grad()
def compute_means(
    model: "HookedSparseTransformer",
    batches: Iterable[Int[Tensor, "batch pos"]],
    n_batches: Optional[int] = None,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Mean of every node over all tokens of ``batches``, at the node hook points (post-AbsTopK).

    Streams the batches through ``run_with_cache`` (only the node hooks are cached).

    Returns:
        hook name -> mean [*channel_shape] (float32).
    """
    hook_names = {site.hook_name for site in model.node_sites}
    sums: dict[str, Tensor] = {}
    count = 0
    for i, tokens in enumerate(tqdm(batches, total=n_batches, desc="node means", disable=not progress)):
        if n_batches is not None and i >= n_batches:
            break
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hook_names, return_type=None)
        for name in hook_names:
            act = cache[name].float()
            total = act.sum(dim=(0, 1))
            sums[name] = sums[name] + total if name in sums else total
        count += tokens.shape[0] * tokens.shape[1]
    if count == 0:
        raise ValueError("compute_means got no batches")
    return {name: total / count for name, total in sums.items()}
