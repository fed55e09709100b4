"""Saving and loading models: sparselens's own format and the released weight-sparse checkpoints.

sparselens format (a directory):
    ``config.json``       ``{"format": "sparselens", "format_version": 2, "config": {...}}``
    ``model.safetensors`` the state dict; a tensor at most half nonzero (a weight-sparse matrix) is
                          stored compactly as ``NAME.nonzero_index`` (int32, flat) and
                          ``NAME.nonzero_value``, its shape in the file's metadata (version 2;
                          version 1 files, all dense, still load)
    tokenizer files       when a tokenizer is attached (``tokenizer.json`` and friends)

Released format (Gao et al. 2025; METHOD.md section 1): ``beeg_config.json`` + ``final_model.pt``
with nanoGPT-style keys. It is converted on load into a :class:`HookedSparseTransformer`.
"""

from __future__ import annotations

import hashlib
import json
import math
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from sparselens.config import SparseTransformerConfig
from sparselens.errors import CheckpointError

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
# a tensor whose nonzero fraction is at most this is stored as (flat index, value) pairs
COMPACT_MAX_DENSITY = 0.5
# smaller tensors (gains, a sink per head) stay dense: compacting them saves nothing worth a lookup
COMPACT_MIN_NUMEL = 64
_INDEX_SUFFIX = ".nonzero_index"
_VALUE_SUFFIX = ".nonzero_value"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
RELEASED_CONFIG_FILE = "beeg_config.json"
RELEASED_WEIGHTS_FILE = "final_model.pt"

# Released ``afrac_loctypes`` -> our AbsTopK site names.
_RELEASED_SITES = {
    "attn_in": "attn_in",
    "attn_q": "q",
    "attn_k": "k",
    "attn_v": "v",
    "attn_out": "attn_out",
    "mlp_in": "mlp_in",
    "mlp_neuron": "neuron",
    "mlp_out": "mlp_out",
}


# ---------------------------------------------------------------------------- sparselens format
def model_fingerprint(model: "HookedSparseTransformer") -> str:
    """A short hash of the architecture and weights, so a circuit knows which model it belongs to."""
    h = hashlib.sha256(json.dumps(
        {k: v for k, v in model.cfg.to_dict().items() if k not in ("device", "seed", "tokenizer_name")}, sort_keys=True
    ).encode())
    for name, p in sorted(model.state_dict().items()):
        if p.is_floating_point():
            h.update(f"{name}:{float(p.double().abs().sum()):.6e}".encode())
    return h.hexdigest()[:16]


def save_pretrained(model: "HookedSparseTransformer", path: Union[str, Path]) -> Path:
    """Write the model to ``path`` (created if needed); returns the directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    header = {"format": "sparselens", "format_version": FORMAT_VERSION, "config": model.cfg.to_dict()}
    header["config"].pop("device", None)
    state, shapes = compact_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    tmp = path / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"compact_shapes": json.dumps(shapes)})
    tmp.replace(path / WEIGHTS_FILE)  # never leave a half-written weights file behind
    (path / CONFIG_FILE).write_text(json.dumps(header, indent=2, sort_keys=True))
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(path))
    return path


def compact_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """Store each floating tensor at most ``COMPACT_MAX_DENSITY`` nonzero as flat (index, value) pairs.

    Returns the tensors to write and ``{name: shape}`` of the compacted ones (for the metadata).
    """
    out: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, t in state.items():
        flat = t.reshape(-1)
        if t.is_floating_point() and t.numel() >= COMPACT_MIN_NUMEL and (flat != 0).float().mean() <= COMPACT_MAX_DENSITY:
            index = flat.nonzero().squeeze(1)
            out[name + _INDEX_SUFFIX] = index.to(torch.int32)
            out[name + _VALUE_SUFFIX] = flat[index].contiguous()
            shapes[name] = list(t.shape)
        else:
            out[name] = t.contiguous()
    return out, shapes


def expand_state_dict(stored: dict[str, torch.Tensor], shapes: dict[str, list[int]], source: str) -> dict[str, torch.Tensor]:
    """Invert :func:`compact_state_dict`; ``source`` names the file in errors."""
    state = {k: v for k, v in stored.items() if not k.endswith((_INDEX_SUFFIX, _VALUE_SUFFIX))}
    for name, shape in shapes.items():
        index, value = stored.get(name + _INDEX_SUFFIX), stored.get(name + _VALUE_SUFFIX)
        numel = math.prod(shape)
        if index is None or value is None or index.shape != value.shape or (
            index.numel() and (int(index.min()) < 0 or int(index.max()) >= numel)
        ):
            raise CheckpointError(
                f"{source}: the compact entries of {name!r} are missing or inconsistent; the file is "
                "corrupt. Re-save or re-download the checkpoint."
            )
        dense = torch.zeros(numel, dtype=value.dtype)
        dense[index.long()] = value
        state[name] = dense.reshape(shape)
    return state


def load_pretrained(path_or_name: Union[str, Path], device: Optional[str] = None) -> "HookedSparseTransformer":
    """Load from a directory (either format) or a name registered in ``sparselens.pretrained``."""
    from sparselens import pretrained

    path = Path(path_or_name).expanduser()
    if not path.exists():
        if isinstance(path_or_name, str) and path_or_name in pretrained.list_models():
            path = pretrained.resolve(path_or_name)
        else:
            raise CheckpointError(
                f"no checkpoint at {str(path_or_name)!r}: it is neither a directory nor a registered "
                f"model name. Registered names: {pretrained.list_models()}"
                + _name_hint(str(path_or_name), pretrained.list_models())
            )
    if path.is_file():
        path = path.parent
    if (path / CONFIG_FILE).exists():
        return _load_sparselens(path, device)
    if (path / RELEASED_CONFIG_FILE).exists():
        return load_released(path, device)
    raise CheckpointError(
        f"{path} holds no checkpoint: expected {CONFIG_FILE} + {WEIGHTS_FILE} (sparselens) or "
        f"{RELEASED_CONFIG_FILE} + {RELEASED_WEIGHTS_FILE} (released weight-sparse models); found "
        f"{sorted(p.name for p in path.iterdir())[:10]}"
    )


def _name_hint(name: str, names: list[str]) -> str:
    from sparselens.errors import closest_hint

    return closest_hint(name, names)


def _read_json(file: Path) -> dict[str, Any]:
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file} is not valid JSON ({err}); the file is corrupt or truncated") from None


def _load_sparselens(path: Path, device: Optional[str]) -> "HookedSparseTransformer":
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

    header = _read_json(path / CONFIG_FILE)
    if header.get("format") != "sparselens" or "config" not in header:
        raise CheckpointError(f"{path / CONFIG_FILE} is not a sparselens config (no 'format': 'sparselens')")
    if header.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise CheckpointError(
            f"{path} was saved in sparselens checkpoint format version {header.get('format_version')}; "
            f"this sparselens reads versions {READABLE_FORMAT_VERSIONS}. Upgrade sparselens or re-save the model."
        )
    weights = path / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{path} has {CONFIG_FILE} but no {WEIGHTS_FILE}; the save was interrupted")
    try:
        cfg = SparseTransformerConfig.from_dict({**header["config"], "device": device or "cpu"})
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path / CONFIG_FILE} has an invalid config: {err}") from None
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = json.loads((f.metadata() or {}).get("compact_shapes", "{}"))
        state = expand_state_dict(load_file(str(weights)), shapes, source=str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{weights} could not be read ({err}); the file is truncated or corrupt. Re-save or "
            "re-download the checkpoint."
        ) from None
    tokenizer = _load_tokenizer(path)
    model = HookedSparseTransformer(cfg, tokenizer=tokenizer)
    load_state_dict_checked(model, state, source=str(weights))
    model.pretrained_path = path
    return model


def _load_tokenizer(path: Path) -> Any:
    if not (path / "tokenizer.json").exists():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def load_state_dict_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly, with one error listing every mismatch and non-finite tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    if wrong_shape:
        problems.append(f"wrong shapes {wrong_shape[:8]}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the model's architecture: " + "; ".join(problems)
            + ". Is the config for these weights?"
        )
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise CheckpointError(f"{source} has NaN or infinite values in {nonfinite[:8]}; the weights are corrupt")
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------- released format
def released_config(beeg: dict[str, Any], has_wpe: bool) -> SparseTransformerConfig:
    """Translate a released ``beeg_config.json`` into a :class:`SparseTransformerConfig`."""
    unsupported = {
        "rms_norm": (beeg.get("rms_norm", False) is not True, "LayerNorm models are not weight-sparse models"),
        "residual_activation_type": (
            beeg.get("residual_activation_type", "identity") != "identity",
            "a ReLU on the residual stream is not supported",
        ),
        "d_pos_emb": (beeg.get("d_pos_emb") is not None, "concatenated positional embeddings are not supported"),
    }
    for field_name, (bad, why) in unsupported.items():
        if bad:
            raise CheckpointError(f"released config has {field_name}={beeg.get(field_name)!r}: {why}")
    n_head, d_model = beeg["n_head"], beeg["d_model"]
    sites = [s.strip() for s in str(beeg.get("afrac_loctypes", "attn_in,attn_out,mlp_in,mlp_out")).split(",") if s.strip()]
    for s in sites:
        if s not in _RELEASED_SITES:
            raise CheckpointError(f"released config sparsifies {s!r}, which sparselens does not model")
    return SparseTransformerConfig(
        n_layers=beeg["n_layer"],
        d_model=d_model,
        n_ctx=beeg["block_size"],
        n_heads=n_head,
        d_head=beeg.get("d_head") or d_model // n_head,
        d_mlp=beeg.get("d_mlp") or beeg.get("n_mlp") or 4 * d_model,
        d_vocab=beeg["vocab_size"],
        act_fn=beeg.get("activation_type", "gelu"),
        afrac=beeg.get("afrac"),
        abstopk_sites=tuple(_RELEASED_SITES[s] for s in sites),
        attn_sink=bool(beeg.get("sink", False)),
        bigram_table=bool(beeg.get("enable_bigram_table", False)),
        positional_embedding_type="learned" if has_wpe else "none",
        use_bias=bool(beeg.get("bias", True)),
        eps=float(torch.finfo(torch.float32).eps),  # torch.nn.RMSNorm's default
        tokenizer_name=beeg.get("tokenizer_name"),
        device="cpu",
    )


def released_state_dict(sd: dict[str, torch.Tensor], cfg: SparseTransformerConfig) -> dict[str, torch.Tensor]:
    """Rename and split a released nanoGPT-style state dict into ours."""
    sd = {k.removeprefix("_orig_mod."): (v.to_dense() if v.is_sparse else v).float() for k, v in sd.items()}

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(f"released checkpoint is missing {key!r}")
        return sd[key]

    out = {"embed.W_E": take("transformer.wte.weight"), "ln_final.w": take("transformer.ln_f.weight")}
    out["unembed.weight"] = sd.get("lm_head.weight", out["embed.W_E"])  # tied unembedding
    out["unembed.b_U"] = sd.get("final_logits_bias", torch.zeros(cfg.d_vocab))
    if cfg.positional_embedding_type == "learned":
        out["pos_embed.W_pos"] = take("transformer.wpe.weight")
    if cfg.bigram_table:
        out["bigram.table"] = take("bigram_table")
    for l in range(cfg.n_layers):
        src, dst = f"transformer.h.{l}.", f"blocks.{l}."
        out[dst + "ln1.w"] = take(src + "ln_1.weight")
        out[dst + "ln2.w"] = take(src + "ln_2.weight")
        suffixes = ["weight", "bias"] if cfg.use_bias else ["weight"]
        for suffix in suffixes:
            q, k, v = take(src + f"attn.c_attn.{suffix}").split(cfg.d_qkv, dim=0)
            out[dst + f"attn.q_proj.{suffix}"] = q
            out[dst + f"attn.k_proj.{suffix}"] = k
            out[dst + f"attn.v_proj.{suffix}"] = v
            out[dst + f"attn.o_proj.{suffix}"] = take(src + f"attn.c_proj.{suffix}")
            out[dst + f"mlp.fc_in.{suffix}"] = take(src + f"mlp.c_fc.{suffix}")
            out[dst + f"mlp.fc_out.{suffix}"] = take(src + f"mlp.c_proj.{suffix}")
        if cfg.attn_sink:
            key = next((k for k in (src + "attn.attn_imp.sink_logit", src + "attn.sink_logit") if k in sd), None)
            if key is None:
                raise CheckpointError(f"released config has sink=True but no sink_logit for layer {l}")
            out[dst + "attn.sink_logit"] = sd[key].reshape(-1).expand(cfg.n_heads).clone()
    return {k: v.contiguous() for k, v in out.items()}


def load_released(path: Union[str, Path], device: Optional[str] = None) -> "HookedSparseTransformer":
    """Load a released ``beeg_config.json`` + ``final_model.pt`` directory."""
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

    path = Path(path)
    beeg = _read_json(path / RELEASED_CONFIG_FILE)
    weights = path / RELEASED_WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{path} has {RELEASED_CONFIG_FILE} but no {RELEASED_WEIGHTS_FILE}")
    try:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated zip / pickle data
        raise CheckpointError(
            f"{weights} could not be read ({type(err).__name__}: {err}); the file is truncated or corrupt. "
            "Download it again."
        ) from None
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    try:
        cfg = released_config(beeg, has_wpe="transformer.wpe.weight" in sd)
    except KeyError as err:
        raise CheckpointError(f"{path / RELEASED_CONFIG_FILE} lacks the field {err}") from None
    model = HookedSparseTransformer(cfg)
    load_state_dict_checked(model, released_state_dict(sd, cfg), source=str(weights))
    model.pretrained_path = path
    return model.to(device or "cpu")


def download(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, atomically (a partial file never stays)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not download {url} ({err}). Check the network, or download the files by hand "
            f"into {dest.parent} and load that directory."
        ) from None
    tmp.replace(dest)
    return dest
