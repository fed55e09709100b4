"""Per-node means over a reference distribution, for mean ablation."""

from __future__ import annotations

from pathlib import Path
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


MEANS_FILE = "node_means.safetensors"


def pretraining_means(
    model: "HookedSparseTransformer",
    n_batches: int = 32,
    batch_size: int = 16,
    source: Optional[str] = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Node means over the pretraining corpus, computed once and reused.

    Looks for ``node_means.safetensors`` next to the model (``model.pretrained_path``), then in
    ``$SPARSELENS_CACHE/means/``, keyed by the model's fingerprint and the settings; otherwise
    streams ``n_batches`` batches of the corpus (``source``: see ``sparselens.data.load_corpus``;
    default the standard library) through :func:`compute_means` and saves the result next to the
    model if that directory is writable, else in the cache.
    """
    from safetensors.torch import load_file, save_file

    from sparselens.data import iter_batches, load_corpus
    from sparselens.model.checkpoint import model_fingerprint
    from sparselens.pretrained import cache_dir

    key = {"fingerprint": model_fingerprint(model), "n_batches": str(n_batches), "batch_size": str(batch_size),
           "source": str(source), "seed": str(seed), "n_ctx": str(model.cfg.n_ctx)}
    candidates = [Path(model.pretrained_path) / MEANS_FILE] if model.pretrained_path is not None else []
    candidates.append(cache_dir() / "means" / f"{key['fingerprint']}-{n_batches}x{batch_size}.safetensors")
    for path in candidates:
        if path.exists():
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                if f.metadata() == key:
                    return load_file(str(path))
    corpus = load_corpus(source, n_ctx=model.cfg.n_ctx, split="train", tokenizer=model.tokenizer, progress=progress)
    device = model.W_E.device
    batches = (b.to(device) for b in iter_batches(corpus, batch_size=batch_size, seed=seed))
    means = compute_means(model, batches, n_batches=n_batches, progress=progress)
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous().cpu() for k, v in means.items()}, str(path), metadata=key)
            break
        except OSError:
            continue
    return means
