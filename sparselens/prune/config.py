"""PruneConfig: every option of pruning to a circuit, with its default, in one place (METHOD.md section 4).

``prune``, ``prune_sweep``, ``sparselens prune``, ``sparselens compare`` and the demo all read their
defaults from here; the command lines build their options from these fields
(:func:`add_prune_arguments`), so a default is never written twice.

Examples:
    >>> config = PruneConfig(ablation="zero", steps=200)
    >>> circuit = prune(model, task, target_loss=0.15, config=config)
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sparselens.interventions.ablation import Ablation


def _option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class PruneConfig:
    """How a circuit is found: the ablation, the mask-learning recipe and the evaluation.

    Attributes:
        ablation: what replaces a dropped node (:class:`~sparselens.interventions.Ablation`).
        freeze_norms: patch the full model's RMSNorm scales (same batch) into every pruned run.
        seed: seeds the mask init, the training pairs and the evaluation pairs.
        steps: mask-learning steps.
        batch_size: prompt pairs per step.
        eval_pairs: validation pairs for the bisection and test pairs for the reported losses.
        train_pairs: distinct training pairs, generated once and drawn from at every step.
        k_coef: weight of the kept-node count in the loss ``task_loss + k_coef * sum(m)``.
        lr, weight_decay: AdamW on ``tau`` (betas 0.9, 0.95), with linear decay to 0.
        init_bias, init_noise: ``tau`` starts at ``N(init_bias, init_noise)``.
        temperature: of the sigmoid in the straight-through gradient.
        grad_clip: gradient-norm clip on ``tau``.
        adversary_steps, adversary_step: with ``ablation="adversarial"``, the adversary
            (:class:`~sparselens.interventions.adversary.Adversary`) takes this many signed steps of
            this size on every batch before the mask's step.

    ``ablation="stochastic"`` and ``"adversarial"`` are faithful pruning: the mask is learned while the
    nodes outside it are only partly mean-ablated (``r * x + (1 - r) * mean``, ``r ~ U(0, 1)`` per node
    and prompt, or the adversary's ``r``), so the circuit must work however much of the rest is
    present. The circuit they find runs, like any other, with plain mean ablation.
    """

    ablation: str = _option("mean", "what replaces a dropped node")
    freeze_norms: bool = _option(False, "patch the full model's norm scales into pruned runs")
    seed: int = _option(0, "seed of the mask init and of the task pairs")
    steps: int = _option(300, "mask-learning steps")
    batch_size: int = _option(64, "prompt pairs per step")
    eval_pairs: int = _option(128, "validation pairs (bisection) and test pairs (reported losses)")
    train_pairs: int = _option(2048, "distinct training pairs, generated once")
    k_coef: float = _option(1e-4, "weight of the kept-node count in the loss")
    lr: float = _option(3e-3, "AdamW learning rate on tau (linear decay to 0)")
    weight_decay: float = _option(1e-3, "AdamW weight decay on tau")
    init_bias: float = _option(0.1, "mean of the tau init (> 0: every node starts kept)")
    init_noise: float = _option(0.01, "std of the tau init")
    temperature: float = _option(1.0, "sigmoid temperature of the straight-through gradient")
    grad_clip: float = _option(1.0, "gradient-norm clip on tau")
    adversary_steps: int = _option(2, "with ablation=adversarial: the adversary's signed steps per batch")
    adversary_step: float = _option(0.1, "with ablation=adversarial: the adversary's step size")

    def __post_init__(self) -> None:
        object.__setattr__(self, "ablation", Ablation.parse(self.ablation).value)
        for name in ("steps", "batch_size", "eval_pairs", "train_pairs", "adversary_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PruneConfig.{name} must be a positive integer, got {value!r}")
        for name in ("lr", "temperature", "grad_clip", "adversary_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PruneConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.k_coef < 0 or self.weight_decay < 0 or self.init_noise < 0:
            raise ValueError("PruneConfig.k_coef, weight_decay and init_noise must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PruneConfig":
        """Build from a mapping; unknown keys raise naming the closest field."""
        from sparselens.errors import closest_hint

        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            raise ValueError(f"unknown PruneConfig field(s) {unknown}" + closest_hint(unknown[0], names))
        return cls(**values)


def add_prune_arguments(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """One ``--option`` per :class:`PruneConfig` field, with its help and default (``defaults`` override)."""
    base = PruneConfig(**{k: v for k, v in defaults.items()})
    for f in dataclasses.fields(PruneConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(base, f.name)
        help_text = f"{f.metadata['help']} (default: %(default)s)"
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif f.name == "ablation":
            parser.add_argument(flag, choices=Ablation.choices(), default=default, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), type(default))
            parser.add_argument(flag, type=kind, default=default, help=help_text)


def prune_config_from_args(args: argparse.Namespace) -> PruneConfig:
    """The :class:`PruneConfig` that :func:`add_prune_arguments`'s options describe."""
    return PruneConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PruneConfig)})
