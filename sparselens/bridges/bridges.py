"""The :class:`Bridges` module: per site an encoder (dense -> sparse) and a decoder (sparse -> dense).

At every bridge site ``i`` (see :mod:`sparselens.bridges.sites`)::

    f_i(h) = AbsTopK_k(h @ W_enc[i] + b_enc[i])     dense residual [.. d_dense] -> sparse [.. d_sparse]
    g_i(h) = h @ W_dec[i] + b_dec[i]                sparse residual [.. d_sparse] -> dense [.. d_dense]

``k`` is ``int(afrac * d_sparse)`` with the sparse model's activation fraction (``encoder_afrac``),
or no AbsTopK at all (``encoder_k[i] = None``); AbsTopK is :func:`sparselens.kernels.abstopk`, the
op the model's own sites use. Row ``c`` of ``W_dec[i]`` is sparse channel ``c``'s direction in the
dense residual stream (what steering pushes a sparse edit through).

Saved like a model: a directory with ``config.json`` (``{"format": "sparselens-bridges",
"format_version": 1, "config": {...}}``) and ``bridges.safetensors``. The config records the
fingerprints (:func:`sparselens.model.fingerprint.model_fingerprint`) of the two models the
bridges were made for; :meth:`Bridges.check_pair` refuses any other pair.

Examples:
    >>> bridges = Bridges.for_models(dense, sparse)
    >>> f0 = bridges.encode("blocks.0.hook_resid_pre", dense_resid)   # [batch pos d_sparse]
    >>> bridges.save_pretrained("runs/bridges/bridges")
    >>> bridges = Bridges.from_pretrained("runs/bridges/bridges", dense=dense, sparse=sparse)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sparselens import kernels
from sparselens.bridges.sites import BridgeSite, SiteLike, bridge_sites, check_pair, resolve_site
from sparselens.errors import CheckpointError, InputError, closest_hint
from sparselens.files import write_text_atomic
from sparselens.model.checkpoint import load_state_dict_checked, read_json
from sparselens.model.fingerprint import model_fingerprint
from sparselens.pretrained import SHIPPED_DIR
from sparselens.train.config import build_dataclass

FORMAT = "sparselens-bridges"
FORMAT_VERSION = 1
READABLE_FORMAT_VERSIONS = (1,)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "bridges.safetensors"
#: bridges shipped in ``sparselens/pretrained`` (scripts/ship_bridges.py), loadable by name
SHIPPED_BRIDGES = ("bridges-pygen-2l-128",)
#: ``encoder_afrac`` meaning "the sparse model's own ``cfg.afrac``"
SPARSE_AFRAC = "sparse"


def is_bridges_dir(spec: Union[str, Path]) -> bool:
    """Whether ``spec`` names saved bridges: a shipped name (:data:`SHIPPED_BRIDGES`) or a directory
    holding a bridges config (what :meth:`Bridges.from_pretrained` loads)."""
    return str(spec) in SHIPPED_BRIDGES or (Path(spec) / CONFIG_FILE).is_file()


@dataclass
class BridgesConfig:
    """Shapes, encoder sparsity and the pair of models a :class:`Bridges` belongs to.

    Args:
        n_layers: layers of both models (there are ``2 * n_layers + 1`` sites).
        d_dense: the dense model's ``d_model``.
        d_sparse: the sparse model's ``d_model``.
        encoder_k: per site, the entries the encoder's AbsTopK keeps per token, or None for none.
        dense_fingerprint: ``model_fingerprint`` of the dense model.
        sparse_fingerprint: ``model_fingerprint`` of the sparse model.
        seed: seeds the initial weights.
    """

    n_layers: int
    d_dense: int
    d_sparse: int
    encoder_k: tuple[Optional[int], ...]
    dense_fingerprint: str
    sparse_fingerprint: str
    seed: int = 0

    def __post_init__(self) -> None:
        self.encoder_k = tuple(self.encoder_k)
        for name in ("n_layers", "d_dense", "d_sparse"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"BridgesConfig.{name} must be a positive int, got {value!r}")
        if len(self.encoder_k) != self.n_sites:
            raise InputError(
                f"BridgesConfig.encoder_k has {len(self.encoder_k)} entries; {self.n_layers} layers have {self.n_sites} sites"
            )
        for k in self.encoder_k:
            if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.d_sparse):
                raise InputError(f"BridgesConfig.encoder_k entries must be None or an int in [1, d_sparse={self.d_sparse}], got {k!r}")

    @property
    def n_sites(self) -> int:
        return 2 * self.n_layers + 1

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["encoder_k"] = list(self.encoder_k)
        return out

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "BridgesConfig":
        """Build from :meth:`to_dict`'s mapping; an unknown key raises naming the closest field."""
        return build_dataclass(cls, config, "BridgesConfig")


def check_encoder_afrac(afrac: Union[float, str, None]) -> None:
    """Raise :class:`InputError` unless ``afrac`` is ``"sparse"``, None or a fraction in (0, 1]."""
    if afrac == SPARSE_AFRAC or afrac is None:
        return
    if isinstance(afrac, (str, bool)) or not isinstance(afrac, (int, float)) or not 0.0 < afrac <= 1.0:
        raise InputError(f"encoder_afrac must be {SPARSE_AFRAC!r} (the sparse model's afrac), a fraction in (0, 1] or None, got {afrac!r}")


def encoder_k(afrac: Union[float, str, None], sparse: Any) -> Optional[int]:
    """Entries the encoder keeps per token: ``int(afrac * d_sparse)``, None without AbsTopK.

    ``afrac="sparse"`` takes the sparse model's ``cfg.afrac`` (None when it has no activation sparsity).
    """
    check_encoder_afrac(afrac)
    value = getattr(sparse.cfg, "afrac", None) if afrac == SPARSE_AFRAC else afrac
    return None if value is None else max(1, int(float(value) * sparse.cfg.d_model))


def model_device(model: Any) -> torch.device:
    """The device of ``model``'s first parameter."""
    return next(model.parameters()).device


class Bridges(nn.Module):
    """Per-site encoders ``f_i`` and decoders ``g_i`` between a dense and a sparse model.

    Attributes:
        cfg: the :class:`BridgesConfig`.
        sites: the bridge sites, in forward order.
        W_enc: [n_sites d_dense d_sparse], b_enc: [n_sites d_sparse] (encoders).
        W_dec: [n_sites d_sparse d_dense], b_dec: [n_sites d_dense] (decoders).
    """

    def __init__(self, cfg: BridgesConfig):
        super().__init__()
        self.cfg = cfg
        self.sites = bridge_sites(cfg.n_layers)
        n = cfg.n_sites
        self.W_enc = nn.Parameter(torch.empty(n, cfg.d_dense, cfg.d_sparse))
        self.b_enc = nn.Parameter(torch.zeros(n, cfg.d_sparse))
        self.W_dec = nn.Parameter(torch.empty(n, cfg.d_sparse, cfg.d_dense))
        self.b_dec = nn.Parameter(torch.zeros(n, cfg.d_dense))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Matrices ``N(0, 1 / d_in)`` (seeded by ``cfg.seed``), biases zero."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        for weight, d_in in ((self.W_enc, self.cfg.d_dense), (self.W_dec, self.cfg.d_sparse)):
            weight.copy_(torch.randn(weight.shape, generator=gen) / math.sqrt(d_in))
        self.b_enc.zero_()
        self.b_dec.zero_()

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_models(cls, dense: Any, sparse: Any, *, encoder_afrac: Union[float, str, None] = SPARSE_AFRAC, seed: int = 0) -> "Bridges":
        """New (randomly initialised) bridges between ``dense`` and ``sparse``, on the sparse model's device.

        Args:
            dense, sparse: the two models (same number of layers and vocabulary).
            encoder_afrac: the encoders' AbsTopK fraction: ``"sparse"`` (the sparse model's
                ``cfg.afrac``), a fraction in (0, 1], or None (linear encoders).
            seed: seeds the initial weights.
        """
        sites = check_pair(dense, sparse)
        k = encoder_k(encoder_afrac, sparse)
        cfg = BridgesConfig(
            n_layers=len(sites) // 2, d_dense=dense.cfg.d_model, d_sparse=sparse.cfg.d_model, encoder_k=(k,) * len(sites),
            dense_fingerprint=model_fingerprint(dense), sparse_fingerprint=model_fingerprint(sparse), seed=seed,
        )
        return cls(cfg).to(model_device(sparse))

    @classmethod
    def identity(cls, model: Any) -> "Bridges":
        """Bridges of a model to itself with ``f_i = g_i = identity`` (no AbsTopK).

        A hybrid run through them is the model's own run, exactly: the check that hybrid runs are
        the model's forward pass and nothing else.
        """
        sites = check_pair(model, model)
        d = model.cfg.d_model
        fingerprint = model_fingerprint(model)
        cfg = BridgesConfig(n_layers=len(sites) // 2, d_dense=d, d_sparse=d, encoder_k=(None,) * len(sites),
                            dense_fingerprint=fingerprint, sparse_fingerprint=fingerprint)
        bridges = cls(cfg)
        with torch.no_grad():
            bridges.W_enc.copy_(torch.eye(d).expand_as(bridges.W_enc))
            bridges.W_dec.copy_(torch.eye(d).expand_as(bridges.W_dec))
        return bridges.to(model_device(model))

    # ------------------------------------------------------------------ the maps
    def site(self, site: SiteLike) -> BridgeSite:
        """The site given by index, hook name or label (an unknown name raises with the closest one)."""
        return resolve_site(self.sites, site)

    def encode(self, site: SiteLike, h: Float[Tensor, "... d_dense"]) -> Float[Tensor, "... d_sparse"]:
        """``f_i(h) = AbsTopK(h @ W_enc[i] + b_enc[i])``: a dense residual mapped into the sparse model's."""
        i = self._checked(site, h, self.cfg.d_dense, "dense").index
        pre = torch.matmul(h.to(self.W_enc.dtype), self.W_enc[i]) + self.b_enc[i]
        k = self.cfg.encoder_k[i]
        return pre if k is None else kernels.abstopk(pre, k)

    def decode(self, site: SiteLike, h: Float[Tensor, "... d_sparse"]) -> Float[Tensor, "... d_dense"]:
        """``g_i(h) = h @ W_dec[i] + b_dec[i]``: a sparse residual mapped into the dense model's."""
        i = self._checked(site, h, self.cfg.d_sparse, "sparse").index
        return torch.matmul(h.to(self.W_dec.dtype), self.W_dec[i]) + self.b_dec[i]

    def _checked(self, site: SiteLike, h: Tensor, width: int, side: str) -> BridgeSite:
        resolved = self.site(site)
        if h.dim() == 0 or h.shape[-1] != width:
            raise InputError(
                f"bridges at {resolved.hook_name}: expected a {side} residual [..., {width}], got shape {tuple(h.shape)}"
            )
        return resolved

    # ------------------------------------------------------------------ the pair
    def check_pair(self, dense: Any, sparse: Any) -> None:
        """Raise :class:`InputError` unless ``dense`` and ``sparse`` are the models these bridges map between."""
        check_pair(dense, sparse)
        for role, model, width, expected in (
            ("dense", dense, self.cfg.d_dense, self.cfg.dense_fingerprint),
            ("sparse", sparse, self.cfg.d_sparse, self.cfg.sparse_fingerprint),
        ):
            if model.cfg.d_model != width or model.cfg.n_layers != self.cfg.n_layers:
                raise InputError(
                    f"these bridges map a {role} model with {self.cfg.n_layers} layers and d_model {width}; the given "
                    f"{role} model has {model.cfg.n_layers} layers and d_model {model.cfg.d_model}"
                )
            actual = model_fingerprint(model)
            if actual != expected:
                raise InputError(
                    f"these bridges were made for a {role} model with fingerprint {expected}, but the given {role} model's "
                    f"is {actual} (another model, or its weights changed). Pass the models the bridges were trained "
                    "between, or train bridges for this pair"
                )

    def bind(self, dense: Any, sparse: Any) -> None:
        """Record ``dense`` and ``sparse`` as this pair (after training the sparse model with the bridges)."""
        check_pair(dense, sparse)
        self.cfg.dense_fingerprint = model_fingerprint(dense)
        self.cfg.sparse_fingerprint = model_fingerprint(sparse)

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(self, path: Union[str, Path]) -> Path:
        """Write ``config.json`` and ``bridges.safetensors`` to directory ``path`` (each file atomically)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = path / (WEIGHTS_FILE + ".tmp")
        save_file(state, str(tmp), metadata={"format": FORMAT})
        tmp.replace(path / WEIGHTS_FILE)
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": self.cfg.to_dict()}
        write_text_atomic(path / CONFIG_FILE, json.dumps(header, indent=2, sort_keys=True))
        return path

    @classmethod
    def from_pretrained(
        cls, path: Union[str, Path], dense: Any = None, sparse: Any = None, device: Optional[Union[str, torch.device]] = None
    ) -> "Bridges":
        """Load a directory written by :meth:`save_pretrained`.

        Args:
            path: the directory, or the name of bridges shipped with sparselens
                (:data:`SHIPPED_BRIDGES`, e.g. ``"bridges-pygen-2l-128"``).
            dense, sparse: the models to use the bridges with; when given, a pair other than the one
                the bridges were made for is refused (:meth:`check_pair`).
            device: where the bridges go (default: the sparse model's device, else the CPU).
        """
        if (dense is None) != (sparse is None):
            raise InputError("pass both dense= and sparse= (to check the pair), or neither")
        path = Path(path)
        if not path.exists() and str(path) in SHIPPED_BRIDGES:
            path = SHIPPED_DIR / str(path)
        config_file = path / CONFIG_FILE
        if not config_file.is_file():
            raise CheckpointError(f"no bridges at {str(path)!r}: {CONFIG_FILE} is missing (save them with Bridges.save_pretrained)"
                                  f"{closest_hint(str(path), SHIPPED_BRIDGES)}")
        header = read_json(config_file)
        if header.get("format") != FORMAT:
            raise CheckpointError(
                f"{config_file} is not a bridges config (format {header.get('format')!r}, expected {FORMAT!r})"
                + ("; it is a model: load it with HookedSparseTransformer.from_pretrained" if header.get("format") == "sparselens" else "")
            )
        if header.get("format_version") not in READABLE_FORMAT_VERSIONS:
            raise CheckpointError(
                f"{path} holds bridges format version {header.get('format_version')}; this sparselens reads "
                f"{READABLE_FORMAT_VERSIONS}. Upgrade sparselens"
            )
        try:
            cfg = BridgesConfig.from_dict(header.get("config", {}))
        except (TypeError, InputError) as err:
            raise CheckpointError(f"{config_file} has an invalid bridges config: {err}") from None
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise CheckpointError(f"{path} has {CONFIG_FILE} but no {WEIGHTS_FILE}; the save was interrupted")
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{weights} could not be read ({err}); the file is truncated or corrupt") from None
        bridges = cls(cfg)
        load_state_dict_checked(bridges, state, source=str(weights))
        if dense is not None:
            bridges.check_pair(dense, sparse)
        if device is None:
            device = model_device(sparse) if sparse is not None else "cpu"
        return bridges.to(device)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"sites={c.n_sites}, d_dense={c.d_dense}, d_sparse={c.d_sparse}, encoder_k={c.encoder_k[0]}"


__all__ = ["SHIPPED_BRIDGES", "Bridges", "BridgesConfig", "check_encoder_afrac", "encoder_k"]
