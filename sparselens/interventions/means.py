"""Per-node means over a reference distribution, for mean ablation."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.cache import cache_dir

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
#: the training config a model folder carries (written by the trainer and scripts/ship_model.py)
TRAIN_CONFIG_FILE = "train_config.yaml"
#: ``data.options`` that decide which documents a corpus holds (the rest only decide caching and display)
_CORPUS_OPTIONS = ("extensions", "strip_docstrings", "n_programs", "pygen_seed", "val_fraction", "text_column")


def pretraining_corpus(model: "HookedSparseTransformer") -> tuple[Any, dict[str, Any]]:
    """``(source, options)`` of the corpus ``model`` was trained on, from its folder's ``train_config.yaml``.

    Raises:
        ValueError: the model does not say (a model built in memory, a released checkpoint): the
            caller must name the corpus rather than have one picked for them.
    """
    import yaml

    path = Path(model.pretrained_path) / TRAIN_CONFIG_FILE if model.pretrained_path is not None else None
    if path is None or not path.is_file():
        where = f"{path} does not exist" if path is not None else "the model was not loaded from a folder"
        raise ValueError(
            f"the model's pretraining corpus is unknown ({where}); pass source=... (a corpus name for "
            "sparselens.data.load_corpus, e.g. 'pygen' or 'stdlib') or compute means yourself with compute_means"
        )
    data = (yaml.safe_load(path.read_text()) or {}).get("data", {})
    source = data.get("source")
    if source in (None, "synthetic") or str(source).endswith(".pt"):
        raise ValueError(f"{path}: the model was trained on data.source={source!r}, which is not a corpus; pass source=...")
    options = {k: v for k, v in (data.get("options") or {}).items() if k in _CORPUS_OPTIONS}
    return source, options


def pretraining_means(
    model: "HookedSparseTransformer",
    n_batches: int = 32,
    batch_size: int = 16,
    source: Any = None,
    seed: int = 0,
    progress: bool = True,
    corpus_options: Optional[dict[str, Any]] = None,
    save_to: Optional[Path] = None,
) -> dict[str, Tensor]:
    """Node means over the model's pretraining corpus, computed once and reused.

    Looks for ``node_means.safetensors`` next to the model (``model.pretrained_path``, shipped with
    the package's models), then in ``$SPARSELENS_CACHE/means/``, keyed by the model's fingerprint and
    the settings; otherwise streams ``n_batches`` batches of the corpus through
    :func:`compute_means` and saves the result in the cache (never into the model's folder: use
    :func:`save_means` for that).

    Args:
        source, corpus_options: the corpus (see ``sparselens.data.load_corpus``); default the one
            the model was trained on (:func:`pretraining_corpus`).
        save_to: also write the means (with their key) to this file, e.g. a model folder's
            ``node_means.safetensors`` when shipping it.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from sparselens.data import iter_batches, load_corpus
    from sparselens.model.fingerprint import model_fingerprint

    if source is None:
        source, corpus_options = pretraining_corpus(model)
    corpus_options = dict(corpus_options or {})
    key = {"fingerprint": model_fingerprint(model), "n_batches": str(n_batches), "batch_size": str(batch_size),
           "source": repr(source), "options": repr(sorted(corpus_options.items())), "seed": str(seed),
           "n_ctx": str(model.cfg.n_ctx)}
    cached = cache_dir() / "means" / f"{key['fingerprint']}-{hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:12]}.safetensors"
    candidates = [Path(model.pretrained_path) / MEANS_FILE] if model.pretrained_path is not None else []
    for path in candidates + [cached]:
        if path.exists():
            with safe_open(str(path), framework="pt") as f:
                if f.metadata() == key:
                    means = load_file(str(path))
                    if save_to is not None and Path(save_to) != path:
                        save_means(means, Path(save_to), key)
                    return means
    corpus = load_corpus(source, n_ctx=model.cfg.n_ctx, split="train", tokenizer=model.tokenizer, progress=progress,
                         **corpus_options)
    device = model.W_E.device
    batches = (b.to(device) for b in iter_batches(corpus, batch_size=batch_size, seed=seed))
    means = compute_means(model, batches, n_batches=n_batches, progress=progress)
    save_means(means, cached, key)
    if save_to is not None:
        save_means(means, Path(save_to), key)
    return means


def save_means(means: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> Path:
    """Write ``means`` (atomically) as safetensors with the key :func:`pretraining_means` checks."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({k: v.contiguous().cpu() for k, v in means.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path
