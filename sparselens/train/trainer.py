"""The weight-sparse trainer (METHOD.md section 2).

One optimizer step (:meth:`Trainer.train_step`), with ``i`` the 0-based step index:

1. forward (bf16 autocast on CUDA) and backward of the mean next-token cross-entropy; under
   data parallelism DDP averages the gradients across ranks during backward; on a CPU the batch's
   rows are split over ``data_threads`` threads that run at once (:mod:`.thread_parallel`);
2. divide all gradients by their global RMS;
3. Adam (betas 0.9/0.95, eps 0.1, no built-in decay) at the sharkfin learning rate ``lr(i)``;
4. prune every sparsified matrix to the L0 fraction ``l0(i)`` (per-matrix top-|w| with the floor);
5. decoupled weight decay ``p *= 1 - lr(i) * weight_decay`` on the matrices.

With ``cfg.bridge`` the loss of step 1 also has the bridge terms to a frozen dense model
(:func:`~sparselens.bridges.bridge_losses`, times ``bridge.weight``), and the bridges train with
the model through steps 2-3 (they are neither pruned nor decayed): METHOD.md section 5's setup.

The step path makes no host synchronisation: schedules are Python numbers, losses stay on the
device until a train record every ``log_every`` steps stacks them and syncs once (that is also
where a non-finite loss is noticed). Step counts in records and messages are 1-based: "step s"
means after ``s`` optimizer steps.

Examples:
    >>> cfg = TrainConfig(model=SparseTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_vocab=128),
    ...                   n_steps=100, batch_size=8, l0_target=0.25, out_dir="runs/tiny")
    >>> model = Trainer(cfg).train()   # writes runs/tiny/{metrics.jsonl,curves.png,checkpoint.pt,model/}
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
import torch.distributed as dist
from jaxtyping import Float, Int
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from sparselens.errors import CheckpointError, InputError
from sparselens.interventions.means import TRAIN_CONFIG_FILE
from sparselens.model.checkpoint import load_state_dict_checked
from sparselens.model.fingerprint import model_fingerprint
from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
from sparselens.train import distributed
from sparselens.train.batches import BatchSampler, TokenSplits, load_tokens
from sparselens.train.checkpoint import load_checkpoint, save_checkpoint
from sparselens.train.config import TrainConfig
from sparselens.train.metrics import MetricsLog, plot_metrics, validation_stats
from sparselens.train.optim import build_adam, decay_, decayed_parameters, normalize_grad_rms_
from sparselens.train.schedule import l0_fraction, learning_rate
from sparselens.train.sparsifier import WeightSparsifier
from sparselens.train.thread_parallel import backward_in_threads
from sparselens.train.tracking import open_sinks

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
NONFINITE_CHECKPOINT_FILE = "checkpoint-nonfinite.pt"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
MODEL_DIR = "model"
#: settings that change what is written and when, not the weights: free to change on resume
_CADENCE = ("model", "out_dir", "progress", "plot", "log_every", "eval_every", "eval_batches", "checkpoint_every", "tracking")


#: torch >= 2.13 renamed DDP's ``broadcast_buffers`` to ``forward_sync_buffers``
_NO_BUFFER_SYNC_ARG = (
    "forward_sync_buffers"
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else "broadcast_buffers"
)


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class Trainer:
    """Trains a :class:`HookedSparseTransformer` with weight sparsity, alone or data-parallel.

    Under ``torchrun`` (or any initialised ``torch.distributed`` group) each rank builds a
    ``Trainer`` with the same config; rank 0 writes metrics, curves and checkpoints.

    Args:
        cfg: the run.
        tokens: token splits to train on; default: load ``cfg.data``.
        resume: ``True`` to continue from ``<out_dir>/checkpoint.pt``, or a checkpoint path.
        dense: with ``cfg.bridge``, the frozen dense model (default: load ``cfg.bridge.dense``).

    Attributes:
        model: the model being trained (unwrapped, also under DDP).
        step: optimizer steps completed.
        sparsifier: the :class:`WeightSparsifier` (its ``targets`` list the pruned parameters).
        bridges: with ``cfg.bridge``, the :class:`~sparselens.bridges.Bridges` being trained (else None).
        data_threads: shards of each batch run at once on as many CPU threads (``cfg.data_threads``; 1: none).
    """

    def __init__(
        self, cfg: TrainConfig, tokens: Optional[TokenSplits] = None, resume: Union[bool, str, Path] = False, *,
        dense: Any = None,
    ):
        self.cfg = cfg
        self.rank, self.world_size = distributed.world()
        self.is_main = self.rank == 0
        self.device = distributed.local_device(cfg.device)
        self.out_dir = Path(cfg.out_dir)
        seed = cfg.model.seed if cfg.model.seed is not None else cfg.seed
        self.model = HookedSparseTransformer(dataclasses.replace(cfg.model, device=str(self.device), seed=seed))
        if cfg.init is not None:  # before the bridges, which may be bound to it; a resumed run then loads its own weights
            self._load_init(cfg.init)
        mcfg = self.model.cfg
        if tokens is None:
            tokens = load_tokens(cfg.data, mcfg.d_vocab, mcfg.n_ctx, cfg.seed)
        self.tokens = tokens.check(mcfg.d_vocab, mcfg.n_ctx, "training tokens")
        if tokens.tokenizer is not None:
            self.model.set_tokenizer(tokens.tokenizer)
        self.sampler = BatchSampler(tokens.train, cfg.batch_size, cfg.seed, self.rank, self.world_size)
        self.sparsifier = WeightSparsifier(self.model, floor=cfg.floor, sparsify_biases=cfg.sparsify_biases)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.dense: Any = None
        self.bridges: Any = None
        if cfg.bridge is not None:
            self.dense, self.bridges, self._site_weights = self._build_bridges(dense)
            self._params += list(self.bridges.parameters())
        self._decayed = decayed_parameters(self.model)
        self.optimizer = build_adam(self._params, cfg.lr, (cfg.beta1, cfg.beta2), cfg.adam_eps)
        self.data_threads = self._data_threads()
        self.metrics = MetricsLog(self.out_dir / METRICS_FILE)
        self.step = 0
        self._pending: list[Tensor] = []  # 0-d device losses not yet synced
        self._window: list[float] = []  # synced losses since the last train record
        self._clock: Optional[tuple[float, int]] = None  # (time, step) at the last train record of this process
        self._last_good_checkpoint: Optional[tuple[Path, int]] = None
        if resume:
            self.load(self.out_dir / CHECKPOINT_FILE if resume is True else Path(resume))
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # the only buffer is the causal mask, identical everywhere: no need to re-send it each forward
            no_buffer_sync: dict[str, Any] = {_NO_BUFFER_SYNC_ARG: False}  # the keyword's name depends on torch
            self._forward_module: Any = DistributedDataParallel(self.model, device_ids=device_ids, **no_buffer_sync)
        else:
            self._forward_module = self.model

    def _build_bridges(self, dense: Any) -> tuple[Any, Any, dict[str, list[float]]]:
        """The frozen dense model, the bridges between it and the model, and the per-term site weights
        (``cfg.bridge``; the weights checked against the pair's sites once, here)."""
        from sparselens.bridges import Bridges
        from sparselens.bridges.losses import term_site_weights
        from sparselens.bridges.sites import check_pair

        spec = self.cfg.bridge
        assert spec is not None
        if self.world_size > 1:
            raise InputError("training with bridges (bridge:) runs on one process; drop torchrun or the bridge: section")
        if dense is None:
            dense = HookedSparseTransformer.from_pretrained(spec.dense, device=str(self.device))
        sites = check_pair(dense, self.model)
        try:
            site_weights = term_site_weights(spec.site_weights, len(sites))
        except InputError as err:
            raise InputError(f"bridge.{err}; {self.model.cfg.n_layers} layers have {len(sites)} bridge sites "
                             f"({', '.join(s.label for s in sites)})") from None
        if spec.init is not None:  # saved bridges, made for this dense model and the model as it starts (init:)
            bridges = Bridges.from_pretrained(spec.init, dense=dense, sparse=self.model)
        else:
            bridges = Bridges.for_models(dense, self.model, encoder_afrac=spec.encoder_afrac, seed=self.cfg.seed)
        return dense, bridges.to(self.device), site_weights

    def _load_init(self, name: str) -> None:
        """Start from the weights of the saved model ``name`` (``cfg.init``), which must have this run's architecture."""
        source = HookedSparseTransformer.from_pretrained(name, device=str(self.device))
        saved, current = source.cfg.to_dict(), self.model.cfg.to_dict()
        not_weights = ("device", "seed", "tokenizer_name")  # where it runs, its random init, the tokenizer set from the data
        differ = sorted(k for k in set(saved) | set(current) if k not in not_weights and saved.get(k) != current.get(k))
        if differ:
            details = ", ".join(f"{k}: {saved.get(k)!r} there vs {current.get(k)!r} in model:" for k in differ[:6])
            raise InputError(f"init {name!r} has another architecture ({details}); copy its config.json into model:")
        load_state_dict_checked(self.model, source.state_dict(), source=name)

    def _data_threads(self) -> int:
        """Shards of each step's batch run at once on as many threads (``cfg.data_threads``); 1: no split."""
        asked = self.cfg.data_threads
        where = None
        if self.device.type != "cpu":
            where = f"on {self.device.type}"
        elif self.world_size > 1:
            where = "under data parallelism across processes"
        elif self.cfg.bridge is not None:
            where = "with bridge: (the bridge terms' NMSE is a ratio over the whole batch)"
        if where is not None:
            if asked is not None and asked > 1:
                raise InputError(f"data_threads={asked} splits the CPU batches of one process; it does not apply {where}: leave it unset")
            return 1
        if asked is not None and asked > self.cfg.batch_size:
            raise InputError(f"data_threads={asked} is more than batch_size={self.cfg.batch_size} rows to split; lower it")
        return asked if asked is not None else min(torch.get_num_threads(), self.cfg.batch_size)

    # ---------------------------------------------------------------- schedules
    def l0_at(self, index: int) -> float:
        """L0 fraction the weights are pruned to after the step with 0-based index ``index``."""
        c = self.cfg
        return l0_fraction(index, c.n_steps, c.l0_target, c.anneal_start, c.anneal_end)

    def lr_at(self, index: int) -> float:
        """Sharkfin learning rate of the step with 0-based index ``index``."""
        c = self.cfg
        return learning_rate(index, c.n_steps, c.lr, c.l0_target, c.warmup, c.anneal_start, c.anneal_end)

    @property
    def current_l0(self) -> float:
        """The L0 fraction the weights were last pruned to (1.0 before the first step)."""
        return self.l0_at(self.step - 1) if self.step else 1.0

    # ---------------------------------------------------------------- the step
    def _autocast(self) -> torch.autocast:
        enabled = self.device.type == "cuda" and self.cfg.bf16
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, ""]:
        """One optimizer step on this rank's token batch (already on the device).

        Returns the batch's loss as a 0-d device tensor (no host sync).
        """
        index = self.step
        lr, l0 = self.lr_at(index), self.l0_at(index)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self._autocast(), self.model.fused_attention():
            if self.bridges is not None:
                loss, total = self._bridged_loss(tokens, index)
                total.backward()
            elif self.data_threads > 1:
                loss = backward_in_threads(self._next_token_loss, tokens, self._params, self.data_threads)
            else:
                loss = self._next_token_loss(tokens)
                loss.backward()
        normalize_grad_rms_(self._params)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sparsifier.apply(l0)
        decay_(self._decayed, lr, self.cfg.weight_decay)
        self.step += 1
        return loss.detach()

    def _next_token_loss(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, ""]:
        return self._forward_module(tokens, return_type="loss", check_tokens=False)  # checked up front

    def _bridged_loss(self, tokens: Int[Tensor, "batch pos"], index: int) -> tuple[Tensor, Tensor]:
        """``(next-token loss, loss to minimise)`` of step ``index`` with the bridge terms (``cfg.bridge``)."""
        from sparselens.bridges.losses import bridge_losses, frozen_parameters

        spec, n_sites = self.cfg.bridge, self.bridges.cfg.n_sites
        assert spec is not None
        kl_sites = None
        if spec.kl_sites_per_step is not None and spec.kl_sites_per_step < n_sites:  # a pure function of seed and step
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + index)
            kl_sites = torch.randperm(n_sites, generator=gen)[: spec.kl_sites_per_step].tolist()
        dense_attention = getattr(self.dense, "fused_attention", contextlib.nullcontext)
        with frozen_parameters(self.dense.parameters()), dense_attention():
            losses = bridge_losses(self.dense, self.model, self.bridges, tokens, lm_loss=True, kl_sites=kl_sites)
        assert losses.lm is not None
        return losses.lm, losses.lm + spec.weight * losses.weighted_bridge_total(1.0, self._site_weights)

    def _batch(self, index: int) -> Int[Tensor, "batch pos"]:
        tokens = self.sampler.batch(index)
        if self.device.type == "cuda":  # pinned + non_blocking: the copy does not wait for the GPU
            return tokens.pin_memory().to(self.device, non_blocking=True)
        return tokens.to(self.device)

    # ---------------------------------------------------------------- the loop
    def train(self, stop_at: Optional[int] = None) -> HookedSparseTransformer:
        """Train to ``cfg.n_steps`` (or stop after step ``stop_at``, checkpointing there).

        Writes ``metrics.jsonl``, ``config.yaml``, ``checkpoint.pt`` and (with each checkpoint)
        ``curves.png`` under ``cfg.out_dir`` and, at the end of the run, the model to
        ``<out_dir>/model`` (loadable with ``HookedSparseTransformer.from_pretrained``).

        Raises:
            TrainingDivergedError: the loss became NaN/inf; the message names the first such step
                and where the state was saved.
        """
        c = self.cfg
        end = c.n_steps if stop_at is None else min(stop_at, c.n_steps)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            c.to_yaml(self.out_dir / "config.yaml")
            self.metrics.sinks = open_sinks(c.tracking, self.out_dir, c.to_dict(), self.step)
            if self.step == 0:
                self.metrics.path.unlink(missing_ok=True)
                self._log_eval()
        self._clock = (time.perf_counter(), self.step)
        bar = tqdm(
            total=c.n_steps, initial=self.step, desc=f"train L0->{c.l0_target:g}", unit="step",
            disable=not (c.progress and self.is_main), dynamic_ncols=True,
        )
        try:
            while self.step < end:
                self._pending.append(self.train_step(self._batch(self.step)))
                bar.update(1)
                s = self.step
                if s % c.log_every == 0 or s == c.n_steps:
                    self._log_train(bar)
                if s % c.eval_every == 0 or s == c.n_steps:
                    self._log_eval()
                if (c.checkpoint_every and s % c.checkpoint_every == 0) or s == end:
                    self.save_checkpoint()
                    if c.plot and self.is_main:
                        plot_metrics(self.metrics.records(), self.out_dir / CURVES_FILE, title=self._title())
        finally:
            bar.close()
            self.metrics.close_sinks()
        if self.step == c.n_steps and self.is_main:
            self.model.save_pretrained(self.out_dir / MODEL_DIR)
            c.to_yaml(self.out_dir / MODEL_DIR / TRAIN_CONFIG_FILE)  # the model says what it was trained on
            if self.bridges is not None:
                self._save_bridges()
        return self.model

    def _save_bridges(self) -> None:
        """The bridges, bound to the trained model, in ``<out_dir>/bridges`` with a config that
        ``sparselens bridges evaluate`` reads (the pair: the dense model and ``<out_dir>/model``)."""
        from sparselens.bridges.train import BRIDGES_DIR, BridgeTrainConfig
        from sparselens.bridges.train import TRAIN_CONFIG_FILE as BRIDGE_RUN_FILE

        c, spec = self.cfg, self.cfg.bridge
        assert spec is not None and self.bridges is not None
        self.bridges.bind(self.dense, self.model)
        folder = self.bridges.save_pretrained(self.out_dir / BRIDGES_DIR)
        BridgeTrainConfig(
            dense=spec.dense, sparse=str(self.out_dir / MODEL_DIR), data=c.data, steps=c.n_steps, batch_size=c.batch_size,
            lr=c.lr, encoder_afrac=spec.encoder_afrac, seed=c.seed, out_dir=str(self.out_dir),
        ).to_yaml(folder / BRIDGE_RUN_FILE)

    def _sync_losses(self) -> None:
        """Move pending losses to the host (one sync; averaged over ranks) and stop on a non-finite one."""
        if not self._pending:
            return
        losses = torch.stack(self._pending).float()
        if self.world_size > 1:
            dist.all_reduce(losses)
            losses /= self.world_size
        values = losses.tolist()
        first_step = self.step - len(values) + 1
        self._pending = []
        self._window.extend(values)
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            self._diverged(first_step + bad, values[bad])

    def _diverged(self, step: int, value: float) -> None:
        path = self.out_dir / NONFINITE_CHECKPOINT_FILE
        if self.is_main:
            save_checkpoint(self._state(), path)
        if self._last_good_checkpoint is not None:
            good = f"the last checkpoint with finite losses is {self._last_good_checkpoint[0]} (step {self._last_good_checkpoint[1]})"
        else:
            good = "no earlier checkpoint exists"
        raise TrainingDivergedError(
            f"the training loss became {value} at step {step} of {self.cfg.n_steps} (lr {self.lr_at(step - 1):.4g}, "
            f"L0 {self.l0_at(step - 1):.4g}); stopped at step {self.step}. The state at step {self.step} was "
            f"saved to {path} for inspection; {good}. Lower lr, or check the data for bad tokens, and start "
            "again (or resume from that checkpoint)."
        )

    def _log_train(self, bar: Any) -> None:
        self._sync_losses()
        if not self._window:
            return
        c, s = self.cfg, self.step
        mean = sum(self._window) / len(self._window)
        self._window = []
        l0 = self.l0_at(s - 1)
        if self.is_main:
            record = {
                "event": "train", "step": s, "tokens": s * c.batch_size * self.tokens.train.shape[1],
                "train_loss": mean, "lr": self.lr_at(s - 1), "l0": l0,
            }
            now = time.perf_counter()
            if self._clock is not None and s > self._clock[1]:
                record["seconds_per_step"] = (now - self._clock[0]) / (s - self._clock[1])
            self._clock = (now, s)
            self.metrics.append(record)
            bar.set_postfix(loss=f"{mean:.4f}", l0=f"{l0:.4g}")

    def _val_batches(self) -> Iterator[Int[Tensor, "batch pos"]]:
        val, size = self.tokens.val, self.cfg.batch_size
        for i in range(self.cfg.eval_batches):
            chunk = val[i * size : (i + 1) * size]
            if chunk.shape[0] == 0:
                return
            yield chunk.to(self.device)

    def evaluate(self) -> dict[str, Any]:
        """Validation loss, dead neurons, kurtosis per layer and actual L0 per matrix (see metrics.py);
        with bridges also every bridge term at every site and ``val_kl_pair`` (:func:`~sparselens.bridges.train.loss_record`)."""
        stats = validation_stats(self.model, self._val_batches(), self.sparsifier, self._autocast)
        if self.bridges is None:
            return stats
        from sparselens.bridges.losses import bridge_losses
        from sparselens.bridges.train import loss_record

        with torch.no_grad(), self._autocast():
            packed = [bridge_losses(self.dense, self.model, self.bridges, batch).packed() for batch in self._val_batches()]
        terms = torch.stack(packed).mean(dim=0).tolist()
        record = loss_record("val_bridge_", terms, self.bridges.cfg.n_sites, with_lm=False)
        record["val_kl_pair"] = record.pop("val_bridge_kl_pair")
        return {**stats, **record}

    def _log_eval(self) -> None:
        if not self.is_main:
            return
        record = {"event": "eval", "step": self.step, "l0": self.current_l0, **self.evaluate()}
        self.metrics.append(record)

    def _title(self) -> str:
        m = self.model.cfg
        return f"{m.n_layers} layers, d_model {m.d_model}, L0 target {self.cfg.l0_target:g}, {self.cfg.n_steps} steps"

    # ---------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "train_config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "bridges": None if self.bridges is None else self.bridges.state_dict(),
            "dense_fingerprint": None if self.dense is None else model_fingerprint(self.dense),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "data": {"position": self.step, "seed": self.cfg.seed},
            "pending_losses": list(self._window),
        }

    def save_checkpoint(self, path: Optional[Union[str, Path]] = None) -> Path:
        """Write a resumable checkpoint (default ``<out_dir>/checkpoint.pt``) atomically.

        Every rank must call it (it syncs the pending losses across ranks first); rank 0 writes.
        """
        self._sync_losses()
        path = Path(path) if path is not None else self.out_dir / CHECKPOINT_FILE
        if self.is_main:
            save_checkpoint(self._state(), path)
        self._last_good_checkpoint = (path, self.step)
        return path

    def load(self, path: Union[str, Path]) -> None:
        """Restore model, optimizer, step, data position, RNG states and loss window from a checkpoint."""
        path = Path(path)
        state = load_checkpoint(path)
        saved = dict(state["train_config"].get("model", {}))
        current = self.cfg.to_dict()["model"]
        differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if differ:
            details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {current.get(k)!r}" for k in differ[:6])
            raise CheckpointError(f"{path} was trained with another model architecture ({details}); resume with its config")
        changed = sorted(
            k for k, v in self.cfg.to_dict().items() if k not in _CADENCE and state["train_config"].get(k) != v
        )
        if changed:
            logger.warning("resuming %s with changed training settings %s: the run will not match an uninterrupted one", path, changed)
        if (state.get("bridges") is None) != (self.bridges is None):
            how = "without" if self.bridges is not None else "with"
            raise CheckpointError(f"{path} was trained {how} bridges; resume with its config's bridge: setting")
        if self.dense is not None and state["dense_fingerprint"] != model_fingerprint(self.dense):
            raise CheckpointError(
                f"{path} was trained next to another dense model (fingerprint {state['dense_fingerprint']}); resume with that model"
            )
        try:
            load_state_dict_checked(self.model, state["model"], source=str(path))
            if self.bridges is not None:
                load_state_dict_checked(self.bridges, state["bridges"], source=str(path))
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError, RuntimeError) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"{path}: the optimizer state does not fit this model ({err}); the checkpoint is corrupt") from None
        step = state["step"]
        if state["data"].get("position") != step or not 0 <= step <= self.cfg.n_steps:
            raise CheckpointError(
                f"{path} is at step {step} (data position {state['data'].get('position')}), which does not fit a run "
                f"of n_steps={self.cfg.n_steps}"
            )
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = step
        self._window = list(state["pending_losses"])
        self._pending = []
        self._last_good_checkpoint = (path, step)
        if self.is_main:
            self.metrics.truncate_after(step)
