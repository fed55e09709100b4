"""Saving and loading sparselens's own checkpoint format.

sparselens format (a directory):
    ``config.json``       ``{"format": "sparselens", "format_version": 2, "config": {...}}``
    ``model.safetensors`` the state dict; a tensor at most half nonzero (a weight-sparse matrix) is
                          stored compactly as ``NAME.nonzero_index`` (int32, flat) and
                          ``NAME.nonzero_value``, its shape in the file's metadata (version 2;
                          version 1 files, all dense, still load)
    tokenizer files       when a tokenizer is attached (``tokenizer.json`` and friends)

The released weight-sparse checkpoints (``beeg_config.json`` + ``final_model.pt``) are converted by
:mod:`sparselens.pretrained.released`, and names are resolved by :mod:`sparselens.pretrained`;
this module depends on neither (the dependency runs one way: ``pretrained -> model``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from sparselens.config import SparseTransformerConfig
from sparselens.errors import CheckpointError
from sparselens.model.fingerprint import model_fingerprint  # noqa: F401  (its old home; import it from sparselens.model.fingerprint)

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
#: ``tokenizer=`` of the loaders: the checkpoint's own tokenizer (else pass one, or None for none).
AUTO = "auto"


def save_pretrained(model: "HookedSparseTransformer", path: Union[str, Path]) -> Path:
    """Write the model to ``path`` (created if needed); returns the directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    header: dict[str, Any] = {"format": "sparselens", "format_version": FORMAT_VERSION, "config": model.cfg.to_dict()}
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


def read_json(file: Path) -> dict[str, Any]:
    """Parse a JSON file; a corrupt one raises :class:`CheckpointError`."""
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file} is not valid JSON ({err}); the file is corrupt or truncated") from None


def as_dtype(dtype: Union[torch.dtype, str, None]) -> Optional[torch.dtype]:
    """``torch.bfloat16`` from ``torch.bfloat16`` or ``"bfloat16"``; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype such as torch.bfloat16 or 'float32', got {dtype!r}")
    return value


def is_sparselens_checkpoint(path: Path) -> bool:
    """Whether directory ``path`` holds a sparselens checkpoint (its ``config.json``)."""
    return (Path(path) / CONFIG_FILE).exists()


def load_sparselens(
    path: Union[str, Path], device: Optional[str] = None, *, dtype: Union[torch.dtype, str, None] = None,
    tokenizer: Any = AUTO,
) -> "HookedSparseTransformer":
    """Load a directory written by :func:`save_pretrained`.

    Args:
        path: the directory.
        device: where the model goes (default CPU).
        dtype: convert the weights to this dtype (default: the dtype they were saved in).
        tokenizer: ``"auto"`` (the tokenizer saved with the model, if any), a tokenizer, a
            directory holding one, or None (no tokenizer).
    """
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

    path = Path(path)
    header = read_json(path / CONFIG_FILE)
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
    dtype = as_dtype(dtype)
    overrides = {"device": device or "cpu"} if dtype is None else {"device": device or "cpu", "dtype": dtype}
    try:
        cfg = SparseTransformerConfig.from_dict({**header["config"], **overrides})
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
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model = HookedSparseTransformer(cfg)
    load_state_dict_checked(model, state, source=str(weights), assign=dtype is not None)
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_saved_tokenizer(path if str(tokenizer) == AUTO else Path(tokenizer))
    if tokenizer is not None:
        model.set_tokenizer(tokenizer)
    model.pretrained_path = path
    return model.to(device or "cpu")


def load_saved_tokenizer(path: Path) -> Any:
    """The tokenizer saved in directory ``path`` (``tokenizer.json``), or None if there is none."""
    if not (Path(path) / "tokenizer.json").exists():
        return None
    from transformers import AutoTokenizer

    from sparselens.data.tokenizer_io import set_tokenizer_name, tokenizer_name

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    name = tokenizer_name(tokenizer)  # recognises the shipped tokenizer saved before names were recorded
    return set_tokenizer_name(tokenizer, name) if name is not None else tokenizer


def all_finite(t: torch.Tensor, chunk: int = 1 << 20) -> bool:
    """Whether every entry of ``t`` is finite, checked a chunk at a time (no tensor-sized temporary)."""
    return all(bool(torch.isfinite(part).all()) for part in t.reshape(-1).split(chunk))


def release_parameters(model: torch.nn.Module) -> None:
    """Replace the model's parameters and persistent buffers by meta tensors of the same shapes,
    freeing their memory, before loading a state dict into it with ``assign=True``."""
    model.load_state_dict({k: torch.empty_like(v, device="meta") for k, v in model.state_dict().items()},
                          strict=True, assign=True)
    release_freed_memory()


def release_freed_memory() -> None:
    """Hand memory that Python freed back to the OS (glibc keeps freed heap blocks otherwise); a no-op
    where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def load_state_dict_checked(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, assign: bool = False
) -> None:
    """Load ``state`` into ``model`` strictly, with one error listing every mismatch and non-finite tensor.

    With ``assign=True`` the model's parameters become the tensors of ``state`` (no copy: a
    memory-mapped checkpoint stays mapped, and their dtype is kept) instead of being copied into.
    The finiteness check then runs after the assignment, so that no tensor of a memory-mapped
    ``state`` is read before the model's own freshly allocated parameters are released.
    """
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
    del expected  # holds the model's own parameters; with assign=True they are freed below
    if assign:
        model.load_state_dict(state, strict=True, assign=True)
        release_freed_memory()  # the replaced parameters, before the checks below read the mapped file
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not all_finite(v)]
    if nonfinite:
        raise CheckpointError(f"{source} has NaN or infinite values in {nonfinite[:8]}; the weights are corrupt")
    if not assign:
        model.load_state_dict(state, strict=True)
