"""Models by name for ``HookedSparseTransformer.from_pretrained(name)``.

Two kinds of entry: models this package ships (a directory inside ``sparselens/pretrained``) and
the released weight-sparse models of Gao et al. (2025), downloaded once, with their tokenizer, into
the cache directory ``$SPARSELENS_CACHE`` (default ``~/.cache/sparselens``), laid out as the release:

    <base>/models/<name>/beeg_config.json, final_model.pt    ->  <cache>/models/<name>/...
    <base>/tinypython/encoder.json, vocab.bpe                ->  <cache>/tinypython/...

``<base>`` is :data:`RELEASED_BASE_URL`, or ``$SPARSELENS_RELEASED_URL`` (any URL urllib opens,
``file://`` included). The released format and tokenizer are converted by
:mod:`sparselens.pretrained.released`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from sparselens.cache import cache_dir
from sparselens.errors import CheckpointError, UnknownNameError, closest_hint
from sparselens.model.checkpoint import AUTO, CONFIG_FILE, WEIGHTS_FILE, is_sparselens_checkpoint, load_sparselens, read_json
from sparselens.pretrained.released import (
    RELEASED_CONFIG_FILE,
    RELEASED_MODELS_DIR,
    RELEASED_WEIGHTS_FILE,
    TINYPYTHON_NAME,
    TOKENIZER_DIR_NAME,
    TOKENIZER_FILES,
    download,
    find_tokenizer_dir,
    is_released_checkpoint,
    load_released,
)

if TYPE_CHECKING:
    import torch

    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

logger = logging.getLogger(__name__)

#: Root of the release: models under ``<base>/models/<name>/``, the tokenizer under ``<base>/tinypython/``.
RELEASED_BASE_URL = "https://openaipublic.blob.core.windows.net/circuit-sparsity"
SHIPPED_DIR = Path(__file__).parent


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: ``shipped`` (a folder in the package) or ``released`` (downloaded)."""

    name: str
    kind: str
    description: str
    location: str  # folder name inside the package, or the remote name

    def describe(self) -> str:
        return f"{self.name:<24}{self.kind:<10}{self.description}"


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> None:
    _REGISTRY[entry.name] = entry


register(ModelEntry("sparse-pygen-2l-128", "shipped", "weight-sparse (L0 1/8), 2 layers, d_model 128, trained on generated Python by configs/pygen-sparse-2l-128.yaml", "sparse-pygen-2l-128"))  # noqa: E501
register(ModelEntry("dense-pygen-2l-128", "shipped", "its dense baseline (same architecture, corpus and recipe; validation loss 0.007 nats apart), configs/pygen-dense-2l-128.yaml", "dense-pygen-2l-128"))  # noqa: E501
register(ModelEntry("sparse-pygen-2l-128-bridged", "shipped", "weight-sparse (L0 1/8), 2 layers, d_model 128, trained next to dense-pygen-2l-128 with bridges to it (bridges-pygen-2l-128), configs/pygen-sparse-2l-128-bridged-*.yaml", "sparse-pygen-2l-128-bridged"))  # noqa: E501

for _name, _desc in [
    ("csp_yolo1", "released weight-sparse Python model (Gao et al. 2025), about 640 MB"),
    ("csp_yolo2", "released weight-sparse Python model (Gao et al. 2025), about 1.7 GB"),
]:
    register(ModelEntry(f"openai/{_name}", "released", _desc, _name))


def list_models() -> list[str]:
    """Names accepted by ``HookedSparseTransformer.from_pretrained``."""
    return sorted(_REGISTRY)


def get(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise UnknownNameError("pretrained model", name, list_models())
    return _REGISTRY[name]




def released_base_url(base_url: Optional[str] = None) -> str:
    """The release's root URL: ``base_url``, else ``$SPARSELENS_RELEASED_URL``, else :data:`RELEASED_BASE_URL`.

    A URL ending in ``/models`` (what ``$SPARSELENS_RELEASED_URL`` meant before the tokenizer was
    downloaded too) is taken as ``<root>/models``.
    """
    base = (base_url or os.environ.get("SPARSELENS_RELEASED_URL") or RELEASED_BASE_URL).rstrip("/")
    if base.endswith("/" + RELEASED_MODELS_DIR):
        logger.warning("the released-models URL %s ends in /%s; using its parent as the release's root", base, RELEASED_MODELS_DIR)
        base = base[: -len(RELEASED_MODELS_DIR) - 1]
    return base


def resolve(name: str, base_url: Optional[str] = None) -> Path:
    """The local directory of a registered model; a released one is downloaded on first use,
    together with its tokenizer (into ``<cache>/tinypython``)."""
    entry = get(name)
    if entry.kind == "shipped":
        return SHIPPED_DIR / entry.location
    base = released_base_url(base_url)
    local = cache_dir() / RELEASED_MODELS_DIR / entry.location
    for file in (RELEASED_CONFIG_FILE, RELEASED_WEIGHTS_FILE):
        if not (local / file).exists():
            download(f"{base}/{RELEASED_MODELS_DIR}/{entry.location}/{file}", local / file)
    released_tokenizer_dir(base_url)
    return local


def released_tokenizer_dir(base_url: Optional[str] = None) -> Path:
    """``<cache>/tinypython`` with the released tokenizer's ``encoder.json`` and ``vocab.bpe``,
    downloaded from ``<base>/tinypython/`` if missing."""
    local = cache_dir() / TOKENIZER_DIR_NAME
    for file in TOKENIZER_FILES:
        if not (local / file).exists():
            download(f"{released_base_url(base_url)}/{TOKENIZER_DIR_NAME}/{file}", local / file)
    return local


def load_pretrained(
    path_or_name: Union[str, Path],
    device: Optional[str] = None,
    *,
    dtype: Union["torch.dtype", str, None] = None,
    tokenizer: Any = AUTO,
) -> "HookedSparseTransformer":
    """Load a directory (either format) or a registered name, with the model's own tokenizer.

    Args:
        path_or_name: a directory written by ``save_pretrained``, a released ``beeg_config.json`` +
            ``final_model.pt`` directory, or a name from :func:`list_models`.
        device: where the model goes (default CPU).
        dtype: the parameters' dtype (default: as stored), converted tensor by tensor.
        tokenizer: ``"auto"``: the tokenizer saved with the model, or for a released model the
            released tokenizer its config names (found next to it, in ``<cache>/tinypython``, or
            downloaded there). Or a tokenizer, a directory holding one, or None for none.
    """
    path = Path(path_or_name).expanduser()
    if not path.exists():
        if isinstance(path_or_name, str) and path_or_name in _REGISTRY:
            path = resolve(path_or_name)
        else:
            raise CheckpointError(
                f"no checkpoint at {str(path_or_name)!r}: it is neither a directory nor a registered "
                f"model name. Registered names: {list_models()}" + closest_hint(str(path_or_name), list_models())
            )
    if path.is_file():
        path = path.parent
    if is_sparselens_checkpoint(path):
        return load_sparselens(path, device, dtype=dtype, tokenizer=tokenizer)
    if is_released_checkpoint(path):
        if isinstance(tokenizer, str) and tokenizer == AUTO:
            tokenizer = _released_tokenizer_for(path)
        return load_released(path, device, dtype=dtype, tokenizer=tokenizer)
    raise CheckpointError(
        f"{path} holds no checkpoint: expected {CONFIG_FILE} + {WEIGHTS_FILE} (sparselens) or "
        f"{RELEASED_CONFIG_FILE} + {RELEASED_WEIGHTS_FILE} (released weight-sparse models); found "
        f"{sorted(p.name for p in path.iterdir())[:10]}"
    )


def _released_tokenizer_for(path: Path) -> Any:
    """``tokenizer=`` for :func:`load_released` of ``path``: the folder of its tokenizer files, found or downloaded."""
    name = read_json(path / RELEASED_CONFIG_FILE).get("tokenizer_name", TINYPYTHON_NAME)
    if name != TINYPYTHON_NAME:
        return AUTO  # load_released explains (no tokenizer, or one sparselens cannot build)
    found = find_tokenizer_dir(path, cache_dir() / TOKENIZER_DIR_NAME)
    if found is not None:
        return found
    try:
        return released_tokenizer_dir()
    except CheckpointError as err:
        raise CheckpointError(
            f"{path} needs the released {TINYPYTHON_NAME!r} tokenizer, which is not cached: {err} "
            "Pass tokenizer=None to load the model without a tokenizer (then tasks and means cannot be "
            "computed on it)."
        ) from None


__all__ = [
    "RELEASED_BASE_URL", "SHIPPED_DIR", "ModelEntry", "cache_dir", "get", "list_models", "load_pretrained",
    "register", "released_base_url", "released_tokenizer_dir", "resolve",
]
