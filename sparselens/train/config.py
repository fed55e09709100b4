"""TrainConfig: everything a training run needs, loadable from YAML.

A config file has a ``model:`` mapping (the fields of :class:`~sparselens.SparseTransformerConfig`),
a ``data:`` mapping (:class:`DataConfig`) and the training fields of :class:`TrainConfig` at the top
level::

    model:
      n_layers: 4
      d_model: 256
      n_ctx: 256
      d_vocab: 2048
      afrac: 0.25
      seed: 0
    data:
      source: stdlib          # "synthetic", a corpus name for sparselens.data, or a .pt file
    n_steps: 20000
    batch_size: 64            # global batch, in sequences (split across data-parallel ranks)
    lr: 0.0128
    l0_target: 0.0625         # final nonzero fraction of every weight matrix; 1.0 = dense baseline
    out_dir: runs/sparse-4l
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from sparselens.config import SparseTransformerConfig
from sparselens.errors import InputError, closest_hint
from sparselens.train.tracking import TrackingConfig


@dataclass
class DataConfig:
    """Where the token batches come from.

    Args:
        source: ``"synthetic"`` (a deterministic token stream for tests and smoke runs), a path to a
            ``.pt`` file holding packed tokens (an integer tensor ``[n_seq, n_ctx]``, or a dict with
            ``"train"`` and ``"val"`` tensors), ``"stdlib"`` (the local Python standard library
            through ``sparselens.data.load_corpus``), or another source ``load_corpus`` takes (a
            folder of text files, a hub data set name).
        seq_len: tokens per training row for corpus and synthetic sources (default: the model's
            ``n_ctx``); shorter rows train a model that still runs on ``n_ctx`` tokens.
        val_fraction: for a ``.pt`` file holding one tensor, the fraction of sequences (the last
            ones) held out for validation.
        synthetic_sequences: number of training sequences the synthetic source generates (plus an
            eighth as many validation sequences). A list of corpus sources trains on their
            documents together (e.g. ``[pygen, stdlib]``).
        options: extra keyword arguments passed to ``sparselens.data.load_corpus`` (e.g.
            ``extensions``, ``cache_dir``, ``progress``; ``tokenizer``: a saved tokenizer directory).
    """

    source: Union[str, list[str]] = "synthetic"
    seq_len: Optional[int] = None
    val_fraction: float = 0.05
    synthetic_sequences: int = 512
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = self.source if isinstance(self.source, list) else [self.source]
        if not parts or not all(isinstance(p, str) and p for p in parts):
            raise ValueError(f"data.source must be a non-empty string or a list of them, got {self.source!r}")
        if isinstance(self.source, list) and any(p in ("synthetic",) or p.endswith(".pt") for p in parts):
            raise ValueError(f"data.source {self.source!r}: only corpus sources can be combined in a list (not 'synthetic' or .pt files)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.seq_len is not None and (not isinstance(self.seq_len, int) or self.seq_len < 2):
            raise ValueError(f"data.seq_len must be an integer >= 2 (tokens per training row), got {self.seq_len!r}")
        if self.synthetic_sequences < 1:
            raise ValueError(f"data.synthetic_sequences must be >= 1, got {self.synthetic_sequences}")


@dataclass
class BridgeLossConfig:
    """Bridges trained with the model next to a frozen dense one (METHOD.md section 5, the paper's setup).

    The bridge loss (:func:`~sparselens.bridges.bridge_losses`) joins the next-token loss for the
    whole run, L0 anneal included; the bridges train with the model's optimizer and are saved
    beside it (``<out_dir>/bridges``).

    Args:
        dense: the frozen dense model: a registered name or a saved directory (same number of
            layers and vocabulary as ``model``).
        encoder_afrac: the encoders' AbsTopK fraction: ``"sparse"`` (the model's afrac), a
            fraction in (0, 1], or None (linear encoders).
        weight: multiplies the bridge terms (the next-token loss has weight 1).
        kl_sites_per_step: the hybrid-run KL terms of this many sites, drawn anew each step and
            scaled up to an unbiased sum over all sites (each costs two forwards); None: every site.
        init: saved bridges to start from (a directory or shipped name), made for ``dense`` and
            the model the run starts from (the run's ``init:``); None: new bridges.
        site_weights: factors per bridge site (2 * n_layers + 1, in forward order), e.g. to favour
            the embedding site: a list (every term of each site), or a mapping from some of the
            terms ``nmse_enc``, ``nmse_dec``, ``kl_sparse``, ``kl_dense`` to lists (the others
            keep 1); None: 1 everywhere (:func:`sparselens.bridges.losses.term_site_weights`).
    """

    dense: str = ""
    encoder_afrac: Union[float, str, None] = "sparse"
    weight: float = 1.0
    kl_sites_per_step: Optional[int] = None
    init: Optional[str] = None
    site_weights: Union[list[float], dict[str, list[float]], None] = None

    def __post_init__(self) -> None:
        if self.site_weights is not None:  # the lengths are checked against the sites when the run starts
            from sparselens.bridges.losses import term_site_weights

            w = self.site_weights
            n = len(next(iter(w.values()), [])) if isinstance(w, dict) else len(w) if isinstance(w, (list, tuple)) else 0
            if n == 0:
                raise ValueError("bridge.site_weights must be a list of factors, one per bridge site, or a mapping from "
                                 f"loss terms (nmse_enc, nmse_dec, kl_sparse, kl_dense) to such lists; got {w!r}")
            try:
                term_site_weights(w, n)
            except InputError as err:
                raise ValueError(f"bridge.{err}") from None
        if not isinstance(self.dense, str) or not self.dense:
            raise ValueError("bridge.dense must name the frozen dense model (a registered name or a saved directory)")
        if not (isinstance(self.weight, (int, float)) and 0 < self.weight < float("inf")):
            raise ValueError(f"bridge.weight must be positive and finite, got {self.weight!r}")
        k = self.kl_sites_per_step
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ValueError(f"bridge.kl_sites_per_step must be a positive integer or null (every site), got {k!r}")
        if self.init is not None and (not isinstance(self.init, str) or not self.init):
            raise ValueError(f"bridge.init must name saved bridges (a directory or shipped name), got {self.init!r}")


@dataclass
class TrainConfig:
    """A training run: the model's architecture, the data, and METHOD.md section 2's recipe.

    Args:
        model: the architecture.
        data: the token source.
        n_steps: optimizer steps in the whole run (the schedules are fractions of it).
        batch_size: global batch in sequences of ``model.n_ctx`` tokens (or the data's width);
            split evenly across data-parallel ranks.
        lr: peak learning rate of the sharkfin schedule.
        l0_target: final nonzero fraction of every sparsified matrix, in (0, 1]; 1.0 trains the
            dense baseline with the same recipe.
        anneal_start: fraction of training where the L0 anneal from 1 starts (METHOD: 0.01).
        anneal_end: fraction of training where the L0 reaches ``l0_target`` (METHOD: 0.5).
        warmup: fraction of training of linear learning-rate warmup (METHOD: 0.01).
        floor: nonzeros protected per neuron / attention channel / token row (METHOD: j = 4).
        sparsify_biases: also keep only the top ``L0`` fraction of each bias vector.
        beta1, beta2, adam_eps: Adam's betas and epsilon (METHOD: 0.9, 0.95, 0.1).
        weight_decay: decoupled weight decay on matrices, applied after masking (METHOD: 0.1).
        seed: seeds the data order (and the weights when ``model.seed`` is None).
        bf16: bf16 autocast of the forward on CUDA (ignored on CPU).
        data_threads: on the CPU, split each batch into this many shards whose forward and
            backward run at once on as many threads, each op on one thread
            (:mod:`~sparselens.train.thread_parallel`); None: torch's intra-op thread count (at
            most the batch); 1: off. The gradients equal the whole batch's to float rounding. Only
            for one process on the CPU without ``bridge`` (the bridge terms' NMSE does not split
            over rows).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        out_dir: where checkpoints, metrics, curves and the final model go.
        log_every: steps between train-loss records (the only host syncs of the step loop).
        eval_every: steps between validation records (loss, L0 per matrix, dead neurons, kurtosis).
        eval_batches: validation batches of ``batch_size`` sequences per evaluation.
        checkpoint_every: steps between checkpoints (0: only at the end or at ``stop_at``).
        plot: redraw ``curves.png`` with every checkpoint.
        progress: show a tqdm progress bar.
        tracking: TensorBoard and W&B besides ``metrics.jsonl`` (:class:`~sparselens.train.tracking.TrackingConfig`).
        bridge: train bridges to a frozen dense model with the model (:class:`BridgeLossConfig`; None: no bridges).
        init: start from this saved model's weights instead of a random initialisation (a model
            directory or registered name with ``model``'s architecture): a fine-tune. With
            ``anneal_start: 0`` and ``anneal_end: 0`` its weights stay at ``l0_target`` from step 2.
    """

    model: SparseTransformerConfig
    data: DataConfig = field(default_factory=DataConfig)
    n_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-2
    l0_target: float = 1.0
    anneal_start: float = 0.01
    anneal_end: float = 0.5
    warmup: float = 0.01
    floor: int = 4
    sparsify_biases: bool = False
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 0.1
    weight_decay: float = 0.1
    seed: int = 0
    bf16: bool = True
    data_threads: Optional[int] = None
    device: str = "auto"
    out_dir: str = "runs/train"
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4
    checkpoint_every: int = 500
    plot: bool = True
    progress: bool = True
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    bridge: Optional[BridgeLossConfig] = None
    init: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.bridge, dict):
            self.bridge = build_dataclass(BridgeLossConfig, self.bridge, "bridge")
        if isinstance(self.model, dict):
            self.model = SparseTransformerConfig.from_dict(self.model)
        if isinstance(self.data, dict):
            self.data = build_dataclass(DataConfig, self.data, "data")
        if isinstance(self.tracking, dict):
            self.tracking = build_dataclass(TrackingConfig, self.tracking, "tracking")
        if not isinstance(self.l0_target, (int, float)) or isinstance(self.l0_target, bool) or not (
            0.0 < self.l0_target <= 1.0
        ) or math.isnan(self.l0_target):
            raise ValueError(
                f"l0_target must be a fraction in (0, 1] (the share of each weight matrix kept nonzero; "
                f"1.0 = dense baseline), got {self.l0_target!r}"
            )
        for name in ("n_steps", "batch_size", "log_every", "eval_every", "eval_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be an integer >= 0 (0: only at the end), got {self.checkpoint_every!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive and finite, got {self.lr}")
        if not 0.0 <= self.anneal_start <= self.anneal_end <= 1.0:
            raise ValueError(
                f"need 0 <= anneal_start <= anneal_end <= 1, got anneal_start={self.anneal_start}, "
                f"anneal_end={self.anneal_end}"
            )
        if not 0.0 <= self.warmup <= 1.0:
            raise ValueError(f"warmup must be a fraction in [0, 1], got {self.warmup}")
        if self.init is not None and (not isinstance(self.init, str) or not self.init):
            raise ValueError(f"init must name a saved model directory or a registered model, got {self.init!r}")
        t = self.data_threads
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 1):
            raise ValueError(f"data_threads must be a positive integer or null (torch's thread count), got {t!r}")
        if not isinstance(self.floor, int) or self.floor < 0:
            raise ValueError(f"floor must be an integer >= 0, got {self.floor!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.adam_eps <= 0:
            raise ValueError(f"adam_eps must be positive, got {self.adam_eps}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-safe) with nested ``model`` and ``data`` mappings."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model"] = self.model.to_dict()
        out["model"].pop("device", None)
        out["data"] = dataclasses.asdict(self.data)
        out["tracking"] = dataclasses.asdict(self.tracking)
        out["bridge"] = None if self.bridge is None else dataclasses.asdict(self.bridge)
        return out

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping like :meth:`to_dict`'s; unknown keys raise naming the closest field."""
        if not isinstance(config, dict):
            raise ValueError(f"a training config must be a mapping, got {type(config).__name__}")
        if "model" not in config:
            raise ValueError("a training config needs a 'model:' mapping with the architecture fields")
        return build_dataclass(cls, config, "training config")

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "TrainConfig":
        """Load a YAML file (see the module docstring for the layout)."""
        return load_yaml_config(cls, path, "training config")

    def to_yaml(self, path: Optional[Union[str, Path]] = None) -> str:
        """The config as YAML text; also written to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-2`` as a float (YAML 1.2), not as the string PyYAML makes of it."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml_config(cls: Any, path: Union[str, Path], what: str) -> Any:
    """``cls.from_dict`` of the YAML file at ``path``; a missing file, bad YAML or a bad field raises
    naming the file (``InputError``, a ValueError; FileNotFoundError for a missing file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        config = yaml.load(path.read_text(), Loader=YamlLoader)
    except yaml.YAMLError as err:
        raise InputError(f"{path} is not valid YAML: {err}") from None
    try:
        return cls.from_dict(config)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: {err}") from None


def build_dataclass(cls: type, config: dict[str, Any], what: str) -> Any:
    """``cls(**config)``; an unknown key raises an InputError (a ValueError) naming ``what`` and the closest field."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in config if k not in names]
    if unknown:
        raise InputError(f"unknown {what} field(s) {unknown}" + closest_hint(unknown[0], names))
    return cls(**config)
