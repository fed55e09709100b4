"""Weight-sparse training (METHOD.md section 2): sparsifier, schedules, trainer, data parallelism.

Examples:
    >>> from sparselens import SparseTransformerConfig
    >>> from sparselens.train import TrainConfig, Trainer
    >>> cfg = TrainConfig(model=SparseTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_vocab=128),
    ...                   n_steps=200, batch_size=8, l0_target=0.25, out_dir="runs/tiny")
    >>> model = Trainer(cfg).train()

From the shell: ``sparselens train --config cfg.yaml`` (see ``docs/training.md``).
"""

from sparselens.train.batches import BatchSampler, TokenSplits, load_tokens, synthetic_tokens
from sparselens.train.config import DataConfig, TrainConfig
from sparselens.train.optim import normalize_grad_rms_
from sparselens.train.schedule import l0_fraction, learning_rate, warmup_factor
from sparselens.train.sparsifier import SparseTarget, WeightSparsifier
from sparselens.train.trainer import Trainer, TrainingDivergedError

__all__ = [
    "BatchSampler",
    "DataConfig",
    "SparseTarget",
    "TokenSplits",
    "TrainConfig",
    "Trainer",
    "TrainingDivergedError",
    "WeightSparsifier",
    "l0_fraction",
    "learning_rate",
    "load_tokens",
    "normalize_grad_rms_",
    "synthetic_tokens",
    "warmup_factor",
]
