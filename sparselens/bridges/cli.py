"""``sparselens bridges train --config cfg.yaml`` and ``sparselens bridges evaluate --bridges DIR``.

``train`` reads a :class:`~sparselens.bridges.BridgeTrainConfig` YAML (``dense:`` and ``sparse:``
name registered models or saved directories; ``data:`` as for ``sparselens train``). ``evaluate``
takes the ``bridges/`` directory a run wrote and, unless told otherwise, the models and data of the
run's config (beside the bridges), and writes the table, a JSON file and the per-site plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Optional

from sparselens.errors import InputError
from sparselens.train.cli import add_run_arguments, apply_run_arguments

#: shown under "examples:" in ``--help``
EXAMPLES = """
sparselens bridges train --config configs/bridges-pygen-2l-128.yaml
sparselens bridges train --config configs/bridges-pygen-2l-128.yaml --resume
sparselens bridges evaluate --bridges sparselens/pretrained/bridges-pygen-2l-128
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="{train,evaluate}", required=True, help="what to do")
    train = actions.add_parser("train", help="train bridges between a dense and a sparse model from a YAML config")
    train.add_argument("--config", required=True, help="YAML bridge training config (see docs/bridges.md)")
    add_run_arguments(train)

    evaluate = actions.add_parser("evaluate", help="per-site FVU and hybrid KL of bridges, next to the baselines")
    evaluate.add_argument("--bridges", required=True, help="a bridges directory (a training run writes <out_dir>/bridges)")
    evaluate.add_argument("--dense", help="the dense model (default: the one in the run's train_config.yaml)")
    evaluate.add_argument("--sparse", help="the sparse model (default: the run's; its trained copy with train_sparse)")
    evaluate.add_argument("--data", help="token source, as data.source in a config (default: the run's); its validation split is used")
    evaluate.add_argument("--n-seqs", type=int, default=256, help="held-out sequences to evaluate (default 256)")
    evaluate.add_argument("--batch-size", type=int, default=16, help="sequences per forward")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    evaluate.add_argument("--out", help="write OUT.json, OUT.md and OUT.png (default: <bridges>/evaluation)")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    return _train(args) if args.action == "train" else _evaluate(args)


def _load_model(spec: str, device: str) -> Any:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

    return HookedSparseTransformer.from_pretrained(spec, device=device)


def _train(args: argparse.Namespace) -> int:
    from sparselens.bridges.train import BRIDGES_DIR, METRICS_FILE, BridgeTrainConfig, BridgeTrainer
    from sparselens.train.distributed import local_device
    from sparselens.train.trainer import TrainingDivergedError

    cfg = BridgeTrainConfig.from_yaml(args.config)
    apply_run_arguments(cfg, args)
    if not cfg.dense or not cfg.sparse:
        raise InputError(f"{args.config} needs dense: and sparse: (each a registered model name or a saved model directory)")
    device = str(local_device(cfg.device))
    trainer = BridgeTrainer(cfg, _load_model(cfg.dense, device), _load_model(cfg.sparse, device), resume=args.resume)
    try:
        trainer.train(stop_at=args.stop_at)
    except TrainingDivergedError as err:
        print(f"sparselens bridges train: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sparselens bridges train: interrupted; continue from the last checkpoint in {cfg.out_dir} with --resume", file=sys.stderr)
        return 130
    out = Path(cfg.out_dir)
    print(f"trained {trainer.step}/{cfg.steps} steps; metrics {out / METRICS_FILE}")
    if trainer.step == cfg.steps:
        print(f"bridges saved to {out / BRIDGES_DIR}; evaluate them with: sparselens bridges evaluate --bridges {out / BRIDGES_DIR}")
    else:
        print(f"checkpoint {out / 'checkpoint.pt'}; continue with --resume")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from sparselens.bridges.bridges import Bridges
    from sparselens.bridges.evaluate import evaluate_bridges
    from sparselens.bridges.train import SPARSE_MODEL_DIR, TRAIN_CONFIG_FILE, BridgeTrainConfig
    from sparselens.train.batches import load_tokens
    from sparselens.train.config import DataConfig
    from sparselens.train.distributed import local_device

    folder = Path(args.bridges)
    run_file = folder / TRAIN_CONFIG_FILE
    run_cfg: Optional[BridgeTrainConfig] = BridgeTrainConfig.from_yaml(run_file) if run_file.is_file() else None
    dense_spec = args.dense or (run_cfg.dense if run_cfg else None)
    sparse_spec = args.sparse or (
        (str(folder.parent / SPARSE_MODEL_DIR) if run_cfg.train_sparse else run_cfg.sparse) if run_cfg else None
    )
    if not dense_spec or not sparse_spec:
        raise InputError(f"{folder} has no {TRAIN_CONFIG_FILE} naming its models; pass --dense and --sparse")
    if args.data:
        data = DataConfig(source=args.data)
    elif run_cfg is not None:
        data = run_cfg.data
    else:
        raise InputError(f"{folder} has no {TRAIN_CONFIG_FILE} naming its data; pass --data")
    if args.n_seqs < 1 or args.batch_size < 1:
        raise InputError(f"--n-seqs and --batch-size must be >= 1, got {args.n_seqs} and {args.batch_size}")
    device = str(local_device(args.device))
    dense, sparse = _load_model(dense_spec, device), _load_model(sparse_spec, device)
    bridges = Bridges.from_pretrained(folder, dense=dense, sparse=sparse)
    n_ctx = min(dense.cfg.n_ctx, sparse.cfg.n_ctx)
    data = dataclasses.replace(data, seq_len=min(data.seq_len or n_ctx, n_ctx))
    tokens = load_tokens(data, sparse.cfg.d_vocab, n_ctx, run_cfg.seed if run_cfg else 0).val[: args.n_seqs]
    result = evaluate_bridges(dense, sparse, bridges, tokens, batch_size=args.batch_size, progress=not args.no_progress)
    out = Path(args.out) if args.out else folder / "evaluation"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result.to_dict(), indent=2))
    out.with_suffix(".md").write_text(result.table() + "\n")
    result.plot(out.with_suffix(".png"))
    print(result.table())
    print(f"\nwrote {out.with_suffix('.json')}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")
    return 0
