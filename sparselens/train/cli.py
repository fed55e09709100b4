"""``sparselens train --config cfg.yaml``: train a weight-sparse (or dense, ``l0_target: 1``) model.

Data-parallel on several processes or machines through torchrun, e.g.
``torchrun --nproc_per_node 4 -m sparselens.cli train --config cfg.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sparselens.errors import CheckpointError, InputError

#: shown under "examples:" in ``--help``
EXAMPLES = """
sparselens train --config configs/pygen-sparse-2l-128.yaml
sparselens train --config configs/pygen-sparse-2l-128.yaml --resume
torchrun --nproc_per_node 4 -m sparselens.cli train --config cfg.yaml
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML training config (see docs/training.md)")
    add_run_arguments(parser)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training command shares: --out-dir, --device, --resume, --stop-at, --no-progress."""
    parser.add_argument("--out-dir", help="override the config's out_dir")
    parser.add_argument("--device", help="override the config's device (auto, cpu, cuda, ...)")
    parser.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
        help="continue from <out_dir>/checkpoint.pt, or from the given checkpoint file",
    )
    parser.add_argument(
        "--stop-at", type=int, metavar="STEP",
        help="stop after this many steps (checkpointing there) while keeping the schedule of n_steps; "
        "continue later with --resume",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def apply_run_arguments(cfg: Any, args: argparse.Namespace) -> None:
    """Apply :func:`add_run_arguments`' overrides to a training config; a bad --stop-at raises InputError."""
    if args.out_dir:
        cfg.out_dir = args.out_dir
    if args.device:
        cfg.device = args.device
    if args.no_progress:
        cfg.progress = False
    if args.stop_at is not None and args.stop_at < 1:
        raise InputError(f"--stop-at must be >= 1, got {args.stop_at}")


def run(args: argparse.Namespace) -> int:
    from sparselens.train import distributed
    from sparselens.train.config import TrainConfig
    from sparselens.train.trainer import CURVES_FILE, METRICS_FILE, MODEL_DIR, Trainer, TrainingDivergedError

    try:
        cfg = TrainConfig.from_yaml(args.config)
    except (FileNotFoundError, ValueError) as err:
        print(f"sparselens train: error: {err}", file=sys.stderr)
        return 2
    try:
        apply_run_arguments(cfg, args)
    except InputError as err:
        print(f"sparselens train: error: {err}", file=sys.stderr)
        return 2
    created_group = distributed.init_from_env(distributed.local_device(cfg.device).type)
    try:
        trainer = Trainer(cfg, resume=args.resume)
        trainer.train(stop_at=args.stop_at)
    except (ValueError, FileNotFoundError, CheckpointError, TrainingDivergedError) as err:
        print(f"sparselens train: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"sparselens train: interrupted; continue from the last checkpoint in {cfg.out_dir} with --resume",
            file=sys.stderr,
        )
        return 130
    finally:
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    if trainer.is_main:
        out = Path(cfg.out_dir)
        print(f"trained {trainer.step}/{cfg.n_steps} steps; metrics {out / METRICS_FILE}, curves {out / CURVES_FILE}")
        if trainer.step == cfg.n_steps:
            print(f"model saved to {out / MODEL_DIR} (HookedSparseTransformer.from_pretrained({str(out / MODEL_DIR)!r}))")
            if trainer.bridges is not None:
                from sparselens.bridges.train import BRIDGES_DIR

                print(f"bridges saved to {out / BRIDGES_DIR}; evaluate them with: sparselens bridges evaluate --bridges {out / BRIDGES_DIR}")
        else:
            print(f"checkpoint {out / 'checkpoint.pt'}; continue with --resume")
    return 0
