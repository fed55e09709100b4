"""Training bridges between a frozen dense model and a sparse model (METHOD.md section 5).

One optimizer step, with ``i`` the 0-based step index:

1. the loss of :func:`~sparselens.bridges.losses.bridge_losses` on batch ``i`` (the sparse model's
   next-token cross-entropy added when ``train_sparse``), and its backward;
2. Adam (betas 0.9/0.999, eps 1e-8) at ``lr * warmup(i) * (1 - i / steps)`` (linear warmup over
   ``warmup * steps`` steps, then linear decay to 0);
3. with ``train_sparse``: every weight the sparse model's sparsifier prunes and that was zero when
   the run started is set back to zero, so the sparse model keeps its connectivity (its weight
   sparsity pattern) while its nonzero weights train.

The dense model is always frozen; the sparse model is frozen unless ``train_sparse``. The batches
come from :class:`~sparselens.train.BatchSampler` (a pure function of seed and step), the metrics
go to ``metrics.jsonl`` through :class:`~sparselens.train.metrics.MetricsLog`, and checkpoints
through :func:`~sparselens.train.checkpoint.save_checkpoint` (atomic), so an interrupted and
resumed run equals an uninterrupted one.

Examples:
    >>> bridges = train_bridges(dense, sparse, tokens=splits, steps=2000, batch_size=32, lr=1e-3,
    ...                         out_dir="runs/bridges")
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
import yaml
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.bridges.bridges import SPARSE_AFRAC, Bridges, check_encoder_afrac, encoder_k, is_bridges_dir, model_device
from sparselens.bridges.fit import fit_least_squares
from sparselens.bridges.losses import bridge_losses, frozen_parameters
from sparselens.bridges.sites import check_pair
from sparselens.errors import CheckpointError, InputError, closest_hint
from sparselens.model.checkpoint import load_state_dict_checked
from sparselens.model.fingerprint import model_fingerprint
from sparselens.train.batches import BatchSampler, TokenSplits, load_tokens
from sparselens.train.checkpoint import load_checkpoint, save_checkpoint
from sparselens.train.config import DataConfig, build_dataclass, load_yaml_config
from sparselens.train.metrics import MetricsLog
from sparselens.train.optim import build_adam
from sparselens.train.schedule import warmup_factor
from sparselens.train.sparsifier import WeightSparsifier
from sparselens.train.tracking import TrackingConfig, open_sinks
from sparselens.train.trainer import TrainingDivergedError

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
BRIDGES_DIR = "bridges"
SPARSE_MODEL_DIR = "sparse_model"
TRAIN_CONFIG_FILE = "train_config.yaml"
#: how new bridges start (:attr:`BridgeTrainConfig.init`)
INITS = ("random", "lstsq")
#: the names of the per-site loss terms in a metrics record, in :meth:`BridgeLosses.packed` order
#: (then ``kl_pair`` and ``lm_loss``)
TERMS = ("nmse_enc", "nmse_dec", "kl_sparse_from_site", "kl_dense_from_site")
#: settings that change what is written and when, not the weights: free to change on resume
_CADENCE = ("dense", "sparse", "device", "out_dir", "progress", "log_every", "eval_every", "eval_batches", "checkpoint_every",
            "tracking")


@dataclass
class BridgeTrainConfig:
    """A bridge training run, loadable from YAML (``sparselens bridges train --config``).

    Args:
        dense: the dense model, a registered name or a saved directory (the command line loads it;
            from Python, pass the model to :func:`train_bridges` instead).
        sparse: the sparse model, likewise.
        data: the token source (:class:`~sparselens.train.DataConfig`; the command line's data).
        train_sparse: train the sparse model with the bridges (its LM loss joins the loss and its
            weight sparsity pattern is kept), instead of keeping it frozen.
        steps: optimizer steps.
        batch_size: sequences per step.
        lr: peak learning rate (of the bridges, and of the sparse model unless ``sparse_lr``).
        sparse_lr: with ``train_sparse``, the sparse model's peak learning rate (default ``lr``): a
            trained model usually wants a smaller step than new bridges; same schedule as ``lr``.
        warmup: fraction of the steps of linear warmup.
        encoder_afrac: the encoders' AbsTopK fraction: ``"sparse"`` (the sparse model's afrac), a
            fraction in (0, 1], or None (linear encoders).
        init: how the bridges start: ``"random"`` (``N(0, 1/d_in)`` matrices, zero biases),
            ``"lstsq"`` (every map the ridge regression on the first ``init_seqs`` training
            sequences, :func:`~sparselens.bridges.fit_least_squares`), or saved bridges to go on
            training (a directory :meth:`Bridges.save_pretrained` wrote, or a shipped name; they
            must have been made for this pair).
        init_seqs: training sequences the ``"lstsq"`` fit reads.
        nmse_weight: multiplies the NMSE terms of the loss (the KL terms have weight 1): METHOD.md's
            loss is 1; a smaller weight lets a map trade reconstruction for agreement with the dense
            model's output (the NMSE at a site pulls its encoder towards the sparse model's own
            activation, whose hybrid KL is at best the pair's).
        seed: seeds the bridges' initial weights and the batch order.
        device: for the command line: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        out_dir: where checkpoints, metrics, the bridges (and the trained sparse model) go.
        log_every: steps between train records.
        eval_every: steps between validation records.
        eval_batches: validation batches of ``batch_size`` per validation record.
        checkpoint_every: steps between checkpoints (0: only at the end or at ``stop_at``).
        progress: show a progress bar.
        tracking: TensorBoard and W&B besides ``metrics.jsonl`` (:class:`~sparselens.train.tracking.TrackingConfig`).
    """

    dense: Optional[str] = None
    sparse: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    train_sparse: bool = False
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    sparse_lr: Optional[float] = None
    warmup: float = 0.01
    encoder_afrac: Union[float, str, None] = SPARSE_AFRAC
    init: str = "random"
    init_seqs: int = 256
    nmse_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    out_dir: str = "runs/bridges"
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 2
    checkpoint_every: int = 100
    progress: bool = True
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = build_dataclass(DataConfig, self.data, "data")
        if isinstance(self.tracking, dict):
            self.tracking = build_dataclass(TrackingConfig, self.tracking, "tracking")
        if self.init not in INITS and not is_bridges_dir(self.init):
            raise InputError(
                f"init must be one of {', '.join(INITS)} or a bridges directory (or shipped name), got {self.init!r}"
                f"{closest_hint(self.init, INITS)}"
            )
        for name in ("steps", "batch_size", "log_every", "eval_every", "eval_batches", "init_seqs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise InputError(f"checkpoint_every must be an integer >= 0 (0: only at the end), got {self.checkpoint_every!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < float("inf")):
            raise InputError(f"lr must be positive and finite, got {self.lr!r}")
        if self.sparse_lr is not None:
            if not (isinstance(self.sparse_lr, (int, float)) and 0 < self.sparse_lr < float("inf")):
                raise InputError(f"sparse_lr must be positive and finite (or null: lr), got {self.sparse_lr!r}")
            if not self.train_sparse:
                raise InputError("sparse_lr is set but train_sparse is false: the sparse model is frozen; drop sparse_lr or set train_sparse: true")
        if not 0.0 <= self.warmup <= 1.0:
            raise InputError(f"warmup must be a fraction in [0, 1], got {self.warmup}")
        if not (isinstance(self.nmse_weight, (int, float)) and not isinstance(self.nmse_weight, bool)
                and 0 <= self.nmse_weight < float("inf")):
            raise InputError(f"nmse_weight must be a finite number >= 0 (1: METHOD.md's loss), got {self.nmse_weight!r}")
        if not isinstance(self.train_sparse, bool):
            raise InputError(f"train_sparse must be true or false, got {self.train_sparse!r}")
        check_encoder_afrac(self.encoder_afrac)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["data"] = dataclasses.asdict(self.data)
        out["tracking"] = dataclasses.asdict(self.tracking)
        return out

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "BridgeTrainConfig":
        """Build from a mapping like :meth:`to_dict`'s; an unknown key raises naming the closest field."""
        if not isinstance(config, dict):
            raise InputError(f"a bridge training config must be a mapping, got {type(config).__name__}")
        return build_dataclass(cls, config, "bridge training config")

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "BridgeTrainConfig":
        return load_yaml_config(cls, path, "bridge training config")

    def to_yaml(self, path: Optional[Union[str, Path]] = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


def as_token_splits(tokens: Union[TokenSplits, Tensor, DataConfig, str], cfg: BridgeTrainConfig, d_vocab: int, n_ctx: int) -> TokenSplits:
    """Training and validation tokens from splits, one tensor (its last ``data.val_fraction`` held out) or a source."""
    if isinstance(tokens, str):
        tokens = dataclasses.replace(cfg.data, source=tokens)
    if isinstance(tokens, DataConfig):
        splits = load_tokens(tokens, d_vocab, n_ctx, cfg.seed)
    elif isinstance(tokens, Tensor):
        if tokens.dim() != 2 or tokens.shape[0] < 2:
            raise InputError(f"bridge training tokens must be [n_seq >= 2, pos] (train and val), got shape {tuple(tokens.shape)}")
        n_val = min(tokens.shape[0] - 1, max(1, round(cfg.data.val_fraction * tokens.shape[0])))
        splits = TokenSplits(train=tokens[:-n_val], val=tokens[-n_val:])
    elif isinstance(tokens, TokenSplits):
        splits = tokens
    else:
        raise InputError(f"tokens must be TokenSplits, a token tensor [n_seq, pos], a DataConfig or a source name, got {type(tokens).__name__}")
    try:
        return splits.check(d_vocab, n_ctx, "bridge training tokens")
    except ValueError as err:
        raise InputError(str(err)) from None


def loss_record(prefix: str, terms: list[float], n_sites: int, with_lm: bool, nmse_weight: float = 1.0) -> dict[str, Any]:
    """A metrics record of :meth:`BridgeLosses.packed` terms (every site's KL), each term under ``prefix + name``,
    and ``prefix + "loss"``, the loss they make with the NMSE terms weighted by ``nmse_weight``."""
    record: dict[str, Any] = {f"{prefix}{name}": terms[j * n_sites : (j + 1) * n_sites] for j, name in enumerate(TERMS)}
    record[f"{prefix}kl_pair"] = terms[-2]  # the baseline, not part of the loss
    if with_lm:
        record[f"{prefix}lm_loss"] = terms[-1]
    nmse, kl = terms[: 2 * n_sites], terms[2 * n_sites : -2]  # TERMS: nmse_enc, nmse_dec, kl_sparse, kl_dense
    record[f"{prefix}loss"] = nmse_weight * sum(nmse) + sum(kl) + terms[-1]  # the lm entry is 0 without the lm loss
    return record


class BridgeTrainer:
    """Trains :class:`Bridges` between ``dense`` (frozen) and ``sparse`` (frozen unless ``cfg.train_sparse``).

    Args:
        cfg: the run.
        dense, sparse: the models, on one device; ``sparse`` is trained in place with ``train_sparse``.
        tokens: what :func:`as_token_splits` takes; default ``cfg.data``.
        bridges: bridges to start from (default: new ones, :meth:`Bridges.for_models`).
        resume: ``True`` to continue from ``<out_dir>/checkpoint.pt``, or a checkpoint path.

    Attributes:
        bridges: the bridges being trained.
        step: optimizer steps completed.
    """

    def __init__(
        self, cfg: BridgeTrainConfig, dense: Any, sparse: Any, tokens: Union[TokenSplits, Tensor, DataConfig, str, None] = None,
        *, bridges: Optional[Bridges] = None, resume: Union[bool, str, Path] = False,
    ):
        check_pair(dense, sparse)
        if dense is sparse:
            raise InputError("the dense and the sparse model are the same object; bridges train between two models")
        self.device = model_device(sparse)
        if model_device(dense) != self.device:
            raise InputError(f"the dense model is on {model_device(dense)} and the sparse model on {self.device}; move both to one device")
        self.cfg = dataclasses.replace(cfg)  # a copy that names the models' directories, when they were loaded from one
        for role, model in (("dense", dense), ("sparse", sparse)):
            if getattr(cfg, role) is None and getattr(model, "pretrained_path", None) is not None:
                setattr(self.cfg, role, str(model.pretrained_path))
        self.dense, self.sparse = dense, sparse
        self.out_dir = Path(cfg.out_dir)
        n_ctx = min(dense.cfg.n_ctx, sparse.cfg.n_ctx)
        self.tokens = as_token_splits(cfg.data if tokens is None else tokens, cfg, sparse.cfg.d_vocab, n_ctx)
        if bridges is None and cfg.init not in INITS:
            bridges = Bridges.from_pretrained(cfg.init, dense=dense, sparse=sparse)  # a resumed run then loads its own weights
        if bridges is None:
            bridges = Bridges.for_models(dense, sparse, encoder_afrac=cfg.encoder_afrac, seed=cfg.seed)
            if cfg.init == "lstsq" and not resume:  # a resumed run loads its weights instead
                fit_least_squares(bridges, dense, sparse, self.tokens.train[: cfg.init_seqs], batch_size=cfg.batch_size,
                                  progress=cfg.progress)
        else:
            bridges.check_pair(dense, sparse)
            if bridges.cfg.encoder_k[0] != encoder_k(cfg.encoder_afrac, sparse):
                logger.warning("the given bridges' encoder_k %s differs from encoder_afrac=%r's; the bridges' is used",
                               bridges.cfg.encoder_k[0], cfg.encoder_afrac)
        self.bridges = bridges.to(self.device)
        self.sampler = BatchSampler(self.tokens.train, cfg.batch_size, cfg.seed)
        self.fingerprints = {"dense": model_fingerprint(dense), "sparse_start": model_fingerprint(sparse)}
        groups: list[dict[str, Any]] = [{"params": list(self.bridges.parameters()), "peak_lr": cfg.lr}]
        self._masks: dict[str, Tensor] = {}
        if cfg.train_sparse:
            groups.append({"params": list(sparse.parameters()), "peak_lr": cfg.lr if cfg.sparse_lr is None else cfg.sparse_lr})
            masks = {t.name: t.param != 0 for t in WeightSparsifier(sparse).targets}
            self._masks = {name: mask for name, mask in masks.items() if not bool(mask.all())}  # the matrices with zeros
        self.optimizer = build_adam(groups, cfg.lr, (0.9, 0.999), 1e-8)
        self.metrics = MetricsLog(self.out_dir / METRICS_FILE)
        self.step = 0
        self._window: list[Tensor] = []  # packed loss terms of the steps since the last train record
        self._clock: Optional[tuple[float, int]] = None
        if resume:
            self.load(self.out_dir / CHECKPOINT_FILE if resume is True else Path(resume))

    def lr_at(self, index: int, peak: Optional[float] = None) -> float:
        """Learning rate of the step with 0-based index ``index``, for peak ``peak`` (default ``cfg.lr``)."""
        c = self.cfg
        return (c.lr if peak is None else peak) * warmup_factor(index, c.steps, c.warmup) * (1.0 - index / c.steps)

    def _frozen(self) -> contextlib.AbstractContextManager[None]:
        """The dense model (and the sparse one unless it trains) without grad, restored afterwards."""
        return frozen_parameters([*self.dense.parameters(), *([] if self.cfg.train_sparse else self.sparse.parameters())])

    def train_step(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, " terms"]:
        """One optimizer step (the frozen models' parameters take no gradient); returns the batch's loss
        terms (:meth:`BridgeLosses.packed`, no host sync)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step, group["peak_lr"])
        fused = [getattr(m, "fused_attention", contextlib.nullcontext)() for m in (self.dense, self.sparse)]  # as the trainer
        with self._frozen(), fused[0], fused[1]:
            losses = bridge_losses(self.dense, self.sparse, self.bridges, tokens, lm_loss=self.cfg.train_sparse)
            losses.weighted_total(self.cfg.nmse_weight).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self._masks:
            with torch.no_grad():
                params = dict(self.sparse.named_parameters())
                for name, mask in self._masks.items():
                    params[name].mul_(mask)
        self.step += 1
        return losses.packed()

    def train(self, stop_at: Optional[int] = None) -> Bridges:
        """Train to ``cfg.steps`` (or stop after step ``stop_at``, checkpointing there).

        Writes ``config.yaml``, ``metrics.jsonl`` and ``checkpoint.pt`` under ``cfg.out_dir`` and, at
        the end of the run, the bridges to ``<out_dir>/bridges`` (with the run's config) and, with
        ``train_sparse``, the sparse model to ``<out_dir>/sparse_model``.

        Raises:
            TrainingDivergedError: the loss became NaN or infinite.
        """
        c = self.cfg
        end = c.steps if stop_at is None else min(stop_at, c.steps)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        c.to_yaml(self.out_dir / "config.yaml")
        self.metrics.sinks = open_sinks(c.tracking, self.out_dir, c.to_dict(), self.step)
        bar = tqdm(total=c.steps, initial=self.step, desc="train bridges", unit="step", disable=not c.progress, dynamic_ncols=True)
        if self.step == 0:
            self.metrics.path.unlink(missing_ok=True)
            self._log_eval()
        self._clock = (time.perf_counter(), self.step)
        try:
            while self.step < end:
                self._window.append(self.train_step(self._batch(self.step)))
                bar.update(1)
                s = self.step
                if s % c.log_every == 0 or s == c.steps:
                    self._log_train(bar)
                if s % c.eval_every == 0 or s == c.steps:
                    self._log_eval()
                if (c.checkpoint_every and s % c.checkpoint_every == 0) or s == end:
                    self.save_checkpoint()
        finally:
            bar.close()
            self.metrics.close_sinks()
        if self.step == c.steps:
            if c.train_sparse:
                self.bridges.bind(self.dense, self.sparse)  # the pair is now the trained sparse model
                self.sparse.save_pretrained(self.out_dir / SPARSE_MODEL_DIR)
            self.bridges.save_pretrained(self.out_dir / BRIDGES_DIR)
            c.to_yaml(self.out_dir / BRIDGES_DIR / TRAIN_CONFIG_FILE)
        return self.bridges

    def _batch(self, index: int) -> Int[Tensor, "batch pos"]:
        return self.sampler.batch(index).to(self.device)

    def _record(self, prefix: str, terms: list[float]) -> dict[str, Any]:
        return loss_record(prefix, terms, self.bridges.cfg.n_sites, self.cfg.train_sparse, self.cfg.nmse_weight)

    def _log_train(self, bar: Any) -> None:
        if not self._window:
            return
        terms = torch.stack(self._window).mean(dim=0).tolist()  # the one host sync of a train record
        self._window = []
        s = self.step
        record = {"event": "train", "step": s, **self._record("", terms), "lr": self.lr_at(s - 1)}
        if not all(math.isfinite(v) for v in terms):
            raise TrainingDivergedError(
                f"the bridge loss became non-finite by step {s} of {self.cfg.steps} ({record}); lower lr and start "
                f"again, or resume from the last checkpoint in {self.out_dir}"
            )
        now = time.perf_counter()
        if self._clock is not None and s > self._clock[1]:
            record["seconds_per_step"] = (now - self._clock[0]) / (s - self._clock[1])
        self._clock = (now, s)
        self.metrics.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}")

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Every loss term on the first ``eval_batches`` validation batches (means over the batches)."""
        val, size = self.tokens.val, self.cfg.batch_size
        packed = [
            bridge_losses(self.dense, self.sparse, self.bridges, val[i * size : (i + 1) * size].to(self.device),
                          lm_loss=self.cfg.train_sparse).packed()
            for i in range(min(self.cfg.eval_batches, -(-val.shape[0] // size)))
        ]
        return self._record("val_", torch.stack(packed).mean(dim=0).tolist())

    def _log_eval(self) -> None:
        self.metrics.append({"event": "eval", "step": self.step, **self.evaluate()})

    # ---------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "train_config": self.cfg.to_dict(),
            "model": self.bridges.state_dict(),
            "bridges_config": self.bridges.cfg.to_dict(),
            "sparse_model": self.sparse.state_dict() if self.cfg.train_sparse else None,
            "sparse_masks": self._masks,
            "fingerprints": {**self.fingerprints, "sparse": model_fingerprint(self.sparse)},
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            "data": {"position": self.step, "seed": self.cfg.seed},
            "pending_losses": [t.cpu() for t in self._window],
        }

    def save_checkpoint(self, path: Optional[Union[str, Path]] = None) -> Path:
        """Write a resumable checkpoint (default ``<out_dir>/checkpoint.pt``) atomically."""
        return save_checkpoint(self._state(), Path(path) if path is not None else self.out_dir / CHECKPOINT_FILE)

    def load(self, path: Union[str, Path]) -> None:
        """Restore bridges, optimizer, step, the sparse model (with ``train_sparse``) and the loss window."""
        path = Path(path)
        state = load_checkpoint(path)
        if "fingerprints" not in state or "bridges_config" not in state:
            raise CheckpointError(f"{path} is a training checkpoint, but not of bridges (sparselens bridges train)")
        saved = state["fingerprints"]
        if model_fingerprint(self.dense) != saved["dense"]:
            raise CheckpointError(f"{path} was trained with another dense model (fingerprint {saved['dense']}); resume with that model")
        if model_fingerprint(self.sparse) not in (saved["sparse_start"], saved["sparse"]):
            raise CheckpointError(
                f"{path} was trained with another sparse model (fingerprint {saved['sparse_start']} at the start, "
                f"{saved['sparse']} at the checkpoint); resume with that model"
            )
        changed = sorted(k for k, v in self.cfg.to_dict().items() if k not in _CADENCE and state["train_config"].get(k) != v)
        if changed:
            logger.warning("resuming %s with changed settings %s: the run will not match an uninterrupted one", path, changed)
        current = self.bridges.cfg.to_dict()
        differ = [k for k in ("n_layers", "d_dense", "d_sparse", "encoder_k") if state["bridges_config"].get(k) != current[k]]
        if differ:
            details = ", ".join(f"{k}: checkpoint {state['bridges_config'].get(k)!r} vs now {current[k]!r}" for k in differ)
            raise CheckpointError(f"{path} holds bridges of another shape or encoder ({details}); resume with its config")
        step = state["step"]
        if state["data"].get("position") != step or not 0 <= step <= self.cfg.steps:
            raise CheckpointError(f"{path} is at step {step}, which does not fit a run of steps={self.cfg.steps}")
        load_state_dict_checked(self.bridges, state["model"], source=str(path))
        if self.cfg.train_sparse:
            if state["sparse_model"] is None:
                raise CheckpointError(f"{path} was trained with train_sparse=False; resume with that setting")
            load_state_dict_checked(self.sparse, state["sparse_model"], source=str(path))
            self._masks = {name: mask.to(self.device) for name, mask in state["sparse_masks"].items()}
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{path}: the optimizer state does not fit this run ({err}); was train_sparse changed?") from None
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        self.fingerprints = {"dense": saved["dense"], "sparse_start": saved["sparse_start"]}
        self.step = step
        self._window = [t.to(self.device) for t in state["pending_losses"]]
        self.metrics.truncate_after(step)


def train_bridges(
    dense: Any, sparse: Any, *, tokens: Union[TokenSplits, Tensor, DataConfig, str], train_sparse: bool = False, steps: int = 1000,
    batch_size: int = 32, lr: float = 1e-3, out_dir: Union[str, Path] = "runs/bridges", resume: Union[bool, str, Path] = False,
    progress: bool = True, bridges: Optional[Bridges] = None, stop_at: Optional[int] = None, **settings: Any,
) -> Bridges:
    """Train bridges between ``dense`` (frozen) and ``sparse``; returns them (also saved under ``out_dir``).

    Args:
        dense, sparse: the models (same number of layers and vocabulary, on one device).
        tokens: :class:`TokenSplits`, a token tensor ``[n_seq, pos]`` (its last 5% held out), a
            :class:`DataConfig` or a source name for :func:`~sparselens.train.load_tokens`.
        train_sparse: also train the sparse model (its LM loss joins the loss; in place; its weight
            sparsity pattern is kept). The dense model is always frozen.
        steps, batch_size, lr: the run.
        out_dir: where ``metrics.jsonl``, ``checkpoint.pt`` and the final ``bridges/`` go.
        resume: continue from ``<out_dir>/checkpoint.pt`` (``True``) or a checkpoint path.
        progress: show a progress bar.
        bridges: bridges to start from (default: new ones).
        stop_at: stop after this step (checkpointing there) while keeping the schedule of ``steps``.
        settings: any other :class:`BridgeTrainConfig` field (``warmup``, ``encoder_afrac``, ``init``, ``seed``,
            ``log_every``, ``eval_every``, ``eval_batches``, ``checkpoint_every``).
    """
    cfg = BridgeTrainConfig.from_dict(dict(
        train_sparse=train_sparse, steps=steps, batch_size=batch_size, lr=lr, out_dir=str(out_dir), progress=progress, **settings
    ))
    trainer = BridgeTrainer(cfg, dense, sparse, tokens, bridges=bridges, resume=resume)
    return trainer.train(stop_at=stop_at)


__all__ = ["BridgeTrainConfig", "BridgeTrainer", "as_token_splits", "loss_record", "train_bridges"]
