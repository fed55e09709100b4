"""Training checkpoints: one ``torch.save`` file, written atomically, read back with clear errors.

A checkpoint is a dict::

    {"format": "sparselens-train", "format_version": 1,
     "step": int,                        # optimizer steps completed
     "train_config": TrainConfig.to_dict(),
     "model": state_dict, "optimizer": state_dict,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...], "python": tuple},
     "data": {"position": int, "seed": int},   # global batches consumed, batch-order seed
     "pending_losses": [float, ...]}     # train losses since the last train record

It is written to ``<file>.tmp<pid>``, flushed to disk, then renamed over ``<file>``: a crash
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sparselens.errors import CheckpointError

FORMAT = "sparselens-train"
FORMAT_VERSION = 1
_REQUIRED = ("step", "train_config", "model", "optimizer", "rng", "data", "pending_losses")


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Atomically write ``state`` (without the format header, which is added) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with tmp.open("wb") as f:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; raise :class:`CheckpointError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training checkpoint at {str(path)!r}; start without resume or pass an existing file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, ... all mean the same to the user
        raise CheckpointError(
            f"training checkpoint {str(path)!r} could not be read ({type(err).__name__}: {err}); it is "
            "truncated or corrupt. Delete it to start afresh, or resume from another checkpoint."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a sparselens training checkpoint (no 'format': {FORMAT!r})")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} is training checkpoint format version {state.get('format_version')}; this "
            f"sparselens reads version {FORMAT_VERSION}"
        )
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"training checkpoint {str(path)!r} lacks {missing}; it is incomplete or corrupt")
    return state
