"""Experiment tracking beside ``metrics.jsonl``: TensorBoard event files and Weights & Biases.

Every record the trainers append to ``metrics.jsonl`` also goes to each sink the run's
:class:`TrackingConfig` asks for, flattened to scalars: ``{"event": "train", "step": 40, "loss": 2.1,
"nmse_enc": [0.3, 0.5]}`` becomes ``train/loss = 2.1``, ``train/nmse_enc/0 = 0.3``,
``train/nmse_enc/1 = 0.5`` at step 40 (nested mappings likewise; text is left out). The JSONL stays
the record of truth (plots, resume, shipped metrics read it); the sinks are for watching a run.

- TensorBoard: ``<out_dir>/tensorboard/`` (``tensorboard --logdir <out_dir>``). A resumed run
  purges the events after its checkpoint's step, as the JSONL is truncated there.
- W&B: ``wandb.init(project=..., mode=...)`` with the run's config; ``mode: offline`` writes under
  ``<out_dir>/wandb`` for a later ``wandb sync``. The run id is kept in ``<out_dir>/wandb_run_id``
  so a resumed run continues the same W&B run.

Both are optional extras (``pip install 'sparselens[tracking]'``); asking for one that is not
installed is an error saying so, not a silent no-op. Only the process that writes the JSONL (rank 0)
opens sinks.

Examples:
    >>> cfg = TrainConfig(..., tracking={"tensorboard": True, "wandb_project": "sparse", "wandb_mode": "offline"})
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

from sparselens.errors import InputError

WANDB_MODES = ("online", "offline", "disabled")
TENSORBOARD_DIR = "tensorboard"
WANDB_ID_FILE = "wandb_run_id"


@dataclass
class TrackingConfig:
    """Where a run's metrics go besides ``metrics.jsonl``.

    Args:
        tensorboard: write TensorBoard event files to ``<out_dir>/tensorboard``.
        wandb_project: log to this Weights & Biases project (None: no W&B).
        wandb_mode: ``online``, ``offline`` (no network; ``wandb sync`` later) or ``disabled``.
        wandb_name: the W&B run's display name (default: W&B's).
    """

    tensorboard: bool = False
    wandb_project: Optional[str] = None
    wandb_mode: str = "online"
    wandb_name: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.tensorboard, bool):
            raise InputError(f"tracking.tensorboard must be true or false, got {self.tensorboard!r}")
        if self.wandb_mode not in WANDB_MODES:
            raise InputError(f"tracking.wandb_mode must be one of {', '.join(WANDB_MODES)}, got {self.wandb_mode!r}")


def flatten(record: dict[str, Any]) -> dict[str, float]:
    """``record``'s numbers as ``{"<event>/<key>[/<index or subkey>]": value}`` (``event`` and ``step`` dropped)."""
    prefix = str(record.get("event", "metrics"))
    out: dict[str, float] = {}

    def walk(name: str, value: Any) -> None:
        if isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)):
            if math.isfinite(value):
                out[name] = float(value)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(f"{name}/{i}", item)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{name}/{key}", item)

    for key, value in record.items():
        if key not in ("event", "step"):
            walk(f"{prefix}/{key}", value)
    return out


class Sink(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """Scalars into TensorBoard event files (``torch.utils.tensorboard``)."""

    def __init__(self, log_dir: Path, start_step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError("tracking.tensorboard needs the tensorboard package: pip install 'sparselens[tracking]'") from None
        # events after the checkpoint's step go, as the JSONL keeps records up to and including it
        self.writer = SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step > 0 else None)

    def log(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for name, value in flatten(record).items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Scalars into a Weights & Biases run (one per ``out_dir``, resumed by its stored id)."""

    def __init__(self, cfg: TrackingConfig, out_dir: Path, run_config: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise InputError("tracking.wandb_project needs the wandb package: pip install 'sparselens[tracking]'") from None
        id_file = out_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
        mode: Any = cfg.wandb_mode  # checked against WANDB_MODES
        self.run = wandb.init(project=cfg.wandb_project, name=cfg.wandb_name, mode=mode, dir=str(out_dir),
                              config=run_config, id=run_id, resume="allow")

    def log(self, record: dict[str, Any]) -> None:
        self.run.log(flatten(record), step=int(record.get("step", 0)))

    def close(self) -> None:
        self.run.finish()


def open_sinks(cfg: TrackingConfig, out_dir: Path, run_config: dict[str, Any], start_step: int) -> list[Sink]:
    """The sinks ``cfg`` asks for, ready to log from ``start_step`` on (empty when it asks for none)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sinks: list[Sink] = []
    if cfg.tensorboard:
        sinks.append(TensorBoardSink(out_dir / TENSORBOARD_DIR, start_step))
    if cfg.wandb_project:
        sinks.append(WandbSink(cfg, out_dir, run_config))
    return sinks


__all__ = ["TENSORBOARD_DIR", "WANDB_ID_FILE", "TensorBoardSink", "TrackingConfig", "WandbSink", "flatten", "open_sinks"]
