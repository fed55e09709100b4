"""Models by name for ``HookedSparseTransformer.from_pretrained(name)``.

Two kinds of entry: models this package ships (a directory inside ``sparselens/pretrained``) and
the released weight-sparse models of Gao et al. (2025), downloaded once into the cache directory
``$SPARSELENS_CACHE`` (default ``~/.cache/sparselens``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sparselens.errors import UnknownNameError

RELEASED_BASE_URL = "https://openaipublic.blob.core.windows.net/circuit-sparsity/models"
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


register(ModelEntry("sparse-2l-128", "shipped", "weight-sparse (L0 1/8), 2 layers, d_model 128, trained on the stdlib by configs/sparse-2l-128.yaml", "sparse-2l-128"))
register(ModelEntry("sparse-2l-256", "shipped", "weight-sparse (L0 1/8), 2 layers, d_model 256, configs/sparse-2l-256.yaml; validation loss within 0.05 of dense-2l-128", "sparse-2l-256"))
register(ModelEntry("dense-2l-128", "shipped", "dense baseline, 2 layers, d_model 128, configs/dense-2l-128.yaml", "dense-2l-128"))

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


def cache_dir() -> Path:
    return Path(os.environ.get("SPARSELENS_CACHE", Path.home() / ".cache" / "sparselens"))


def resolve(name: str, base_url: Optional[str] = None) -> Path:
    """The local directory of a registered model, downloading a released one on first use."""
    from sparselens.model.checkpoint import RELEASED_CONFIG_FILE, RELEASED_WEIGHTS_FILE, download

    entry = get(name)
    if entry.kind == "shipped":
        return SHIPPED_DIR / entry.location
    local = cache_dir() / "models" / entry.location
    base = (base_url or os.environ.get("SPARSELENS_RELEASED_URL") or RELEASED_BASE_URL).rstrip("/")
    for file in (RELEASED_CONFIG_FILE, RELEASED_WEIGHTS_FILE):
        if not (local / file).exists():
            download(f"{base}/{entry.location}/{file}", local / file)
    return local
