"""Seed stability: prune once per seed and compare the circuits (METHOD.md section 6; claim 5 of section 7).

    >>> result = seed_stability(model, task, seeds=[0, 1, 2], target_loss=0.15)      # doctest: +SKIP
    >>> result.jaccard              # [n_seeds, n_seeds] pairwise Jaccard of the node sets
    >>> result.loss, result.ood_loss, result.core_nodes
    >>> print(result.summary())

Definitions:

- Jaccard of two node sets ``A``, ``B``: ``|A & B| / |A | B|``, defined as 1.0 for two empty sets
  (they agree on every node). A node is a (site, channel) pair: ``L0.neuron[3]`` and ``L0.q[3]`` differ.
- ``loss`` / ``ood_loss``: each circuit's task loss per pair on ONE common batch of test (OOD) pairs,
  so that differences come from the circuits and not from the pairs; a spread is max - min over seeds.
- ``core_nodes``: the nodes in every circuit.

Where it runs (the same function and the same result in every case; pruning is deterministic per
seed on CPU):

- ``workers=1``: in this process, one seed after another.
- ``workers > 1``: a ``torch.multiprocessing`` spawn pool on this machine. Each worker rebuilds the
  model from its config and weights and the task by name (:func:`sparselens.tasks.get_task`, so the
  task must be a registered one) and uses ``cpu_count // workers`` threads.
- under ``torchrun`` (``WORLD_SIZE`` > 1, or a process group already initialised): rank ``r`` prunes
  ``seeds[r::world_size]`` (with ``workers`` processes of its own) and the circuits are gathered, so
  every rank returns the same result. From the shell, plainly or under torchrun::

    sparselens seeds --model M --task T --seeds 0,1,2 --target 0.15 --out seeds.json
    torchrun --nproc_per_node 2 -m sparselens.cli seeds --model M --task T --seeds 0,1,2,3

Check ``seeds`` (not in the default set: it prunes again): :data:`CHECK_EXTRA_SEEDS` more seeds after
the circuit's own, with its :class:`~sparselens.prune.PruneConfig`, target and node means. Metrics
``seeds_jaccard_min``, ``seeds_jaccard_mean``, ``seeds_loss_spread``, ``seeds_ood_loss_spread`` (tasks
with an ``ood`` split), ``seeds_core_nodes`` (how many nodes are in every circuit); per kept node
``seed_share`` (the share of the seeds' circuits that keep it). Flags: a minimum Jaccard below
:data:`LOW_JACCARD`; OOD losses spread more than :data:`OOD_SPREAD_RATIO` times the in-distribution
ones (and by at least :data:`OOD_SPREAD_MIN`); a re-prune of the circuit's own seed that differs from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, AbstractSet, Any, Iterable, Optional, Sequence, Union

import torch
import torch.distributed as dist
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.faithfulness.context import CheckResult, EvalContext
from sparselens.faithfulness.registry import register
from sparselens.files import write_text_atomic
from sparselens.interventions.ablation import Ablation
from sparselens.interventions.reference import ReferenceRun
from sparselens.model.fingerprint import model_fingerprint
from sparselens.prune.circuit import Circuit, circuit_loss
from sparselens.prune.config import PruneConfig, add_prune_arguments
from sparselens.prune.pruner import prune

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.tasks.base import PromptPair, Task

#: the ``seeds`` check prunes the circuit's own seed and this many more (seed + 1, seed + 2, ...)
CHECK_EXTRA_SEEDS = 2
#: worker processes of the ``seeds`` check (None: as :func:`seed_stability` decides)
CHECK_WORKERS: Optional[int] = None
#: a minimum pairwise Jaccard below this is flagged: the seeds found different circuits
LOW_JACCARD = 0.5
#: OOD losses spreading over more than this many times the in-distribution spread are flagged ...
OOD_SPREAD_RATIO = 2.0
#: ... when the OOD spread is at least this (per-pair loss)
OOD_SPREAD_MIN = 0.05
#: test prompts a worker (or rank) compares with the caller's to make sure it rebuilt the same task
_PROBE_PAIRS = 4

SCHEMA = "sparselens.seed_stability"
SCHEMA_VERSION = 1


# ---------------------------------------------------------------------------------------------- sets
def node_set(circuit: Circuit) -> frozenset[tuple[str, int]]:
    """The circuit's kept nodes as ``(site name, channel index)`` pairs."""
    return frozenset((site, int(i)) for site, indices in circuit.kept.items() for i in indices)


def jaccard(a: AbstractSet[Any], b: AbstractSet[Any]) -> float:
    """``|a & b| / |a | b|``; 1.0 for two empty sets."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def jaccard_matrix(sets: Sequence[AbstractSet[Any]]) -> Float[Tensor, "seed seed"]:
    """Pairwise :func:`jaccard` of ``sets`` (float64, 1.0 on the diagonal)."""
    return torch.tensor([[jaccard(a, b) for b in sets] for a in sets], dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- result
@dataclass(eq=False)
class SeedStability:
    """The circuits of one task pruned with several seeds, and how much they agree.

    Attributes:
        seeds: the pruning seeds, in the order given.
        circuits: one circuit per seed (same order), each reaching ``target_loss`` on its own
            validation pairs.
        jaccard: ``[n_seeds, n_seeds]`` pairwise Jaccard of the node sets (float64).
        loss: per seed, the circuit's task loss per pair on ``test_pairs`` test pairs drawn with
            ``test_seed`` (the same pairs for every circuit).
        ood_loss: the same on the task's ``ood`` split; None when the task has none.
        core_nodes: names of the nodes in every circuit, in registry order.
        task: the task's name; target_loss: the loss every circuit was pruned to.
        test_pairs, test_seed: the common pairs ``loss`` and ``ood_loss`` are measured on.
    """

    seeds: list[int]
    circuits: list[Circuit]
    jaccard: Float[Tensor, "seed seed"]
    loss: list[float]
    ood_loss: Optional[list[float]]
    core_nodes: list[str]
    task: str
    target_loss: float
    test_pairs: int
    test_seed: int

    def _pairs(self) -> Float[Tensor, " pair"]:
        upper = torch.triu_indices(len(self.seeds), len(self.seeds), offset=1)
        return self.jaccard[upper[0], upper[1]]

    @property
    def jaccard_min(self) -> float:
        """The smallest Jaccard over pairs of different seeds."""
        return float(self._pairs().min())

    @property
    def jaccard_mean(self) -> float:
        """The mean Jaccard over pairs of different seeds."""
        return float(self._pairs().mean())

    @property
    def loss_spread(self) -> float:
        """``max - min`` of :attr:`loss` over seeds."""
        return max(self.loss) - min(self.loss)

    @property
    def ood_loss_spread(self) -> float:
        """``max - min`` of :attr:`ood_loss` over seeds; NaN without an OOD split."""
        return math.nan if self.ood_loss is None else max(self.ood_loss) - min(self.ood_loss)

    def summary(self) -> str:
        """Per seed: nodes, edges, losses; the Jaccard matrix; the nodes in every circuit."""
        ood = self.ood_loss is not None
        lines = [f"Seed stability of {len(self.seeds)} circuits on {self.task!r} (target {self.target_loss:g}; losses "
                 f"per pair on {self.test_pairs} common test pairs, seed {self.test_seed})",
                 f"{'seed':>6}{'nodes':>7}{'edges':>8}{'loss':>9}" + (f"{'ood loss':>10}" if ood else "")]
        for i, (seed, circuit) in enumerate(zip(self.seeds, self.circuits)):
            lines.append(f"{seed:>6}{circuit.n_nodes:>7}{circuit.n_edges:>8}{self.loss[i]:>9.4f}"
                         + (f"{self.ood_loss[i]:>10.4f}" if self.ood_loss is not None else ""))
        lines.append(f"loss spread {self.loss_spread:.4f}" + (f", OOD loss spread {self.ood_loss_spread:.4f}" if ood else ""))
        lines.append(f"Jaccard of node sets (min {self.jaccard_min:.2f}, mean {self.jaccard_mean:.2f}):")
        lines.append(" " * 6 + "".join(f"{seed:>6}" for seed in self.seeds))
        for seed, row in zip(self.seeds, self.jaccard.tolist()):
            lines.append(f"{seed:>6}" + "".join(f"{value:>6.2f}" for value in row))
        shown = ", ".join(self.core_nodes[:20]) + (", ..." if len(self.core_nodes) > 20 else "")
        lines.append(f"{len(self.core_nodes)} nodes in every circuit" + (f": {shown}" if shown else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the fields (circuits as :meth:`Circuit.to_dict`, the matrix as lists) and the summaries."""
        return {
            "schema": SCHEMA, "version": SCHEMA_VERSION, "seeds": self.seeds, "task": self.task,
            "target_loss": self.target_loss, "test_pairs": self.test_pairs, "test_seed": self.test_seed,
            "jaccard": self.jaccard.tolist(), "jaccard_min": self.jaccard_min, "jaccard_mean": self.jaccard_mean,
            "loss": self.loss, "loss_spread": self.loss_spread, "ood_loss": self.ood_loss,
            "ood_loss_spread": None if self.ood_loss is None else self.ood_loss_spread,
            "core_nodes": self.core_nodes, "circuits": [c.to_dict() for c in self.circuits],
        }

    def save(self, path: Union[str, Path]) -> Path:
        """Write :meth:`to_dict` as JSON (atomically)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1))


# ---------------------------------------------------------------------------------------------- entry point
def seed_stability(
    model: "HookedSparseTransformer",
    task: "Task",
    seeds: Iterable[int],
    *,
    target_loss: float = 0.15,
    config: Optional[PruneConfig] = None,
    means: Optional[dict[str, Tensor]] = None,
    workers: Optional[int] = None,
    test_pairs: Optional[int] = None,
    test_seed: int = 0,
    progress: bool = True,
    **prune_kwargs: Any,
) -> SeedStability:
    """Prune ``model`` on ``task`` once per seed and compare the circuits.

    Args:
        seeds: at least two distinct integer seeds; each replaces ``config.seed``.
        target_loss: the loss every circuit is bisected to (as :func:`sparselens.prune.prune`).
        config: the pruning options (:class:`~sparselens.prune.PruneConfig`, its defaults when None);
            ``prune_kwargs`` override its fields by name (``steps=100``).
        means: node means for mean ablation; default the model's pretraining means, resolved once
            here and sent to every worker.
        workers: processes on this machine (per rank under torchrun). 1: this process; > 1: a spawn
            pool; None: 1 for a model on a GPU, else one per seed up to the CPU count.
        test_pairs, test_seed: the common pairs ``loss`` and ``ood_loss`` are measured on (default
            ``config.eval_pairs`` pairs, seed 0).
        progress: a bar over the seeds (over finished seeds with a pool; rank 0 only under torchrun).

    Raises:
        ValueError: fewer than two seeds, a repeated seed or one that is not an int; an unknown
            pruning option (naming the closest); a seed whose prune finds no circuit (naming the
            seed); with workers > 1, a task that is not registered by name; ranks given different
            models, tasks or options.
    """
    seed_list = _checked_seeds(seeds)
    config = _merged_config(config, prune_kwargs)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    test_pairs = config.eval_pairs if test_pairs is None else test_pairs
    if isinstance(test_pairs, bool) or not isinstance(test_pairs, int) or test_pairs < 1:
        raise ValueError(f"test_pairs must be a positive integer or None, got {test_pairs!r}")
    distributed, created = _join_process_group(model.W_E.device.type)
    try:
        rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        if distributed:
            _check_ranks_agree(model, task, seed_list, target_loss, config, means)
        means = _resolve_means(model, config, means, progress and rank == 0, distributed)
        mine = seed_list[rank::world_size]
        n_workers = _n_workers(workers, len(mine), model, distributed)
        if distributed:
            by_seed = _prune_on_ranks(model, task, mine, target_loss, config, means, n_workers, progress and rank == 0)
        else:
            by_seed = _prune_here(model, task, mine, target_loss, config, means, n_workers, progress)
    finally:
        if created:
            dist.destroy_process_group()
    circuits = [by_seed[seed] for seed in seed_list]
    sets = [node_set(c) for c in circuits]
    core = frozenset.intersection(*sets)
    return SeedStability(
        seeds=seed_list,
        circuits=circuits,
        jaccard=jaccard_matrix(sets),
        loss=_common_losses(model, task, circuits, "test", test_pairs, test_seed),
        ood_loss=_common_losses(model, task, circuits, "ood", test_pairs, test_seed) if "ood" in task.splits else None,
        core_nodes=[site.node(i).name for site in model.node_sites for i in sorted(i for s, i in core if s == site.name)],
        task=task.name,
        target_loss=float(target_loss),
        test_pairs=test_pairs,
        test_seed=test_seed,
    )


def _checked_seeds(seeds: Iterable[int]) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise ValueError(f"seeds must be a list of integers such as [0, 1, 2], got {seeds!r}")
    out = list(seeds)
    for seed in out:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"every seed must be an integer; {seed!r} ({type(seed).__name__}) in {out} is not")
    out = [int(s) for s in out]
    if len(out) < 2:
        raise ValueError(f"give at least two seeds to compare circuits across, got {out}")
    repeated = sorted({s for s in out if out.count(s) > 1})
    if repeated:
        raise ValueError(f"seed(s) {repeated} appear more than once in {out}; a seed prunes the same circuit every "
                         "time, so give distinct seeds")
    return out


def _merged_config(config: Optional[PruneConfig], overrides: dict[str, Any]) -> PruneConfig:
    if config is not None and not isinstance(config, PruneConfig):
        raise ValueError(f"config must be a PruneConfig (or None), got {type(config).__name__}; "
                         "PruneConfig.from_dict(...) builds one from a dict")
    if "seed" in overrides:
        raise ValueError("pass the pruning seeds as seeds=[...], not seed=")
    return PruneConfig.from_dict({**(config or PruneConfig()).to_dict(), **overrides})


def _join_process_group(device_type: str) -> tuple[bool, bool]:
    """``(distributed, created)``: whether ranks share the work, and whether this call made the group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1, False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from sparselens.train.distributed import init_from_env

        return True, init_from_env(device_type)
    return False, False


def _n_workers(workers: Optional[int], n_seeds: int, model: "HookedSparseTransformer", distributed: bool) -> int:
    if workers is not None:
        return min(workers, max(1, n_seeds))
    if model.W_E.device.type != "cpu":
        return 1
    cpus = (os.cpu_count() or 1) // (int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if distributed else 1)
    return max(1, min(n_seeds, cpus))


def _resolve_means(model: "HookedSparseTransformer", config: PruneConfig, means: Optional[dict[str, Tensor]],
                   progress: bool, distributed: bool) -> Optional[dict[str, Tensor]]:
    """The means every prune uses: given, or the pretraining means (computed on rank 0 under torchrun)."""
    if Ablation.parse(config.ablation).needs != "means" or means is not None:
        return means
    from sparselens.interventions.means import pretraining_means

    if not distributed:
        return pretraining_means(model, progress=progress)
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = {k: v.cpu() for k, v in pretraining_means(model, progress=progress).items()}
        except ValueError as err:
            box[0] = str(err)
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], str):
        raise ValueError(box[0])
    return {k: v.to(model.W_E.device) for k, v in box[0].items()}


def _check_ranks_agree(model: "HookedSparseTransformer", task: "Task", seeds: list[int], target_loss: float,
                       config: PruneConfig, means: Optional[dict[str, Tensor]]) -> None:
    names = ("model", "task", "task prompts", "seeds", "target loss", "config", "means")
    digest = None if means is None else sorted((k, float(v.double().abs().sum())) for k, v in means.items())
    mine = (model_fingerprint(model), task.name, task.pairs(_PROBE_PAIRS, "test", seed=0), seeds, float(target_loss),
            config.to_dict(), digest)
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    for rank, theirs in enumerate(everyone):
        differ = [name for name, a, b in zip(names, theirs, everyone[0]) if a != b]
        if differ:
            raise ValueError(f"rank {rank} was given a different {', '.join(differ)} than rank 0; every rank must call "
                             "seed_stability with the same model, task, seeds and options")


def _prune_one(model: "HookedSparseTransformer", task: "Task", seed: int, target_loss: float, config: PruneConfig,
               means: Optional[dict[str, Tensor]]) -> Circuit:
    try:
        return prune(model, task, target_loss, dataclasses.replace(config, seed=seed), means=means, progress=False)
    except ValueError as err:
        raise ValueError(f"seed {seed}: {err}") from err


def _prune_here(model: "HookedSparseTransformer", task: "Task", seeds: list[int], target_loss: float,
                config: PruneConfig, means: Optional[dict[str, Tensor]], workers: int, progress: bool) -> dict[int, Circuit]:
    """Circuits of ``seeds`` pruned in this process (workers == 1) or by a spawn pool."""
    out: dict[int, Circuit] = {}
    if workers == 1:
        bar = tqdm(seeds, desc=f"pruning {task.name} with {len(seeds)} seeds", unit="seed", disable=not progress)
        for seed in bar:
            out[seed] = _prune_one(model, task, seed, target_loss, config, means)
            bar.set_postfix_str(f"seed {seed}: {out[seed].n_nodes} nodes")
        return out
    spec = _WorkerSpec.of(model, task, target_loss, config, means, threads=max(1, (os.cpu_count() or 1) // workers))
    pool = ProcessPoolExecutor(workers, mp_context=torch.multiprocessing.get_context("spawn"),
                               initializer=_worker_start, initargs=(spec,))
    try:
        futures: dict[Future[Circuit], int] = {pool.submit(_worker_prune, seed): seed for seed in seeds}
        for future in tqdm(as_completed(futures), total=len(futures), unit="seed", disable=not progress,
                           desc=f"pruning {task.name} with {len(seeds)} seeds on {workers} processes"):
            out[futures[future]] = future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _prune_on_ranks(model: "HookedSparseTransformer", task: "Task", seeds: list[int], target_loss: float,
                    config: PruneConfig, means: Optional[dict[str, Tensor]], workers: int,
                    progress: bool) -> dict[int, Circuit]:
    """This rank's circuits, gathered with every other rank's (an error on any rank raises on all)."""
    mine: dict[int, Circuit] = {}
    error: Optional[BaseException] = None
    try:
        mine = _prune_here(model, task, seeds, target_loss, config, means, workers, progress)
    except Exception as err:  # every rank must reach the gather, or the others wait forever
        error = err
    everyone: list[Any] = [None] * dist.get_world_size()
    message = None if error is None else str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
    dist.all_gather_object(everyone, (mine, message))
    failures = [f"rank {rank}: {message}" for rank, (_, message) in enumerate(everyone) if message]
    if failures:
        raise ValueError("pruning failed on " + "; ".join(failures)) from error
    return {seed: circuit for circuits, _ in everyone for seed, circuit in circuits.items()}


def _common_losses(model: "HookedSparseTransformer", task: "Task", circuits: list[Circuit], split: str, n: int,
                   seed: int) -> list[float]:
    """Each circuit's task loss per pair on the same ``n`` pairs of ``split``."""
    batch = task.batch(n=n, split=split, seed=seed).to(model.W_E.device)
    reference = ReferenceRun.of(model, batch) if any(c.needs_reference() for c in circuits) else None
    return [circuit_loss(model, task, c.node_mask(model), batch, c.ablation, reference, c.means_for(model),
                         c.freeze_norms) for c in circuits]


# ---------------------------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class _WorkerSpec:
    """What a worker process rebuilds the model and the task from (sent once per worker)."""

    cfg: dict[str, Any]
    state: dict[str, Tensor]
    fingerprint: str
    task_name: str
    tokenizer: Any
    probe: list["PromptPair"]
    target_loss: float
    config: PruneConfig
    means: Optional[dict[str, Tensor]]
    threads: int

    @classmethod
    def of(cls, model: "HookedSparseTransformer", task: "Task", target_loss: float, config: PruneConfig,
           means: Optional[dict[str, Tensor]], threads: int) -> "_WorkerSpec":
        from sparselens.tasks import list_tasks

        if task.name not in list_tasks():
            raise ValueError(f"task {task.name!r} is not registered, and worker processes rebuild the task by name; "
                             "register it with sparselens.tasks.register_task in a module that is imported on every "
                             "import of your code, or pass workers=1")
        return cls(model.cfg.to_dict(), {k: v.detach().cpu() for k, v in model.state_dict().items()},
                   model_fingerprint(model), task.name, task.tokenizer, task.pairs(_PROBE_PAIRS, "test", seed=0),
                   float(target_loss), config, None if means is None else {k: v.detach().cpu() for k, v in means.items()},
                   threads)

    def build(self) -> tuple["HookedSparseTransformer", "Task", Optional[dict[str, Tensor]]]:
        from sparselens.config import SparseTransformerConfig
        from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
        from sparselens.tasks import get_task

        model = HookedSparseTransformer(SparseTransformerConfig.from_dict(self.cfg))
        model.load_state_dict(self.state)
        model.eval()
        if model_fingerprint(model) != self.fingerprint:
            raise RuntimeError("the model rebuilt in a worker process from its config and weights is not the caller's "
                               f"(fingerprint {model_fingerprint(model)}, expected {self.fingerprint}); pass workers=1")
        task = get_task(self.task_name, tokenizer=self.tokenizer)
        if task.pairs(len(self.probe), "test", seed=0) != self.probe:
            raise ValueError(f"the task {self.task_name!r} rebuilt by name in a worker process makes other prompts than "
                             "the one given (is another task registered under its name?); pass workers=1")
        means = None if self.means is None else {k: v.to(model.W_E.device) for k, v in self.means.items()}
        return model, task, means


_WORKER: dict[str, Any] = {}  # in a worker process: its spec, and the model, task and means built from it


def _worker_start(spec: _WorkerSpec) -> None:
    torch.set_num_threads(spec.threads)
    _WORKER["spec"] = spec


def _worker_prune(seed: int) -> Circuit:
    spec: _WorkerSpec = _WORKER["spec"]
    if "model" not in _WORKER:  # built here, not in the initializer, so that its errors reach the caller
        _WORKER["model"], _WORKER["task"], _WORKER["means"] = spec.build()
    return _prune_one(_WORKER["model"], _WORKER["task"], seed, spec.target_loss, spec.config, _WORKER["means"])


# ---------------------------------------------------------------------------------------------- the check
@register("seeds", default=False,
          description="prune again with other seeds: Jaccard of node sets, spread of losses, nodes in every circuit")
def seeds_check(ctx: EvalContext) -> CheckResult:
    """Re-prune with the circuit's own seed and :data:`CHECK_EXTRA_SEEDS` more; compare the circuits."""
    circuit = ctx.circuit
    if not circuit.config or "target" not in circuit.losses:
        raise ValueError("the circuit does not record the PruneConfig and target loss it was found with (circuit.config, "
                         "circuit.losses['target']); call seed_stability(model, task, seeds, target_loss=..., config=...)")
    config = PruneConfig.from_dict(circuit.config)
    seed_list = [circuit.seed + k for k in range(CHECK_EXTRA_SEEDS + 1)]
    result = seed_stability(ctx.model, ctx.task, seed_list, target_loss=circuit.losses["target"], config=config,
                            means=ctx.means_for(Ablation.parse(config.ablation)), workers=CHECK_WORKERS,
                            test_pairs=ctx.batch.n_pairs, test_seed=ctx.seed, progress=ctx.progress)
    out = CheckResult()
    m = out.metrics
    m["seeds_jaccard_min"], m["seeds_jaccard_mean"] = result.jaccard_min, result.jaccard_mean
    m["seeds_loss_spread"] = result.loss_spread
    if result.ood_loss is not None:
        m["seeds_ood_loss_spread"] = result.ood_loss_spread
    m["seeds_core_nodes"] = float(len(result.core_nodes))
    out.notes.append(f"seeds: pruned with seeds {seed_list} to target {circuit.losses['target']:g} with the circuit's "
                     f"config; circuits of {', '.join(str(c.n_nodes) for c in result.circuits)} nodes")
    sets = [node_set(c) for c in result.circuits]
    registry = ctx.model.node_registry
    for site, index in sorted(node_set(circuit)):
        out.nodes[registry.site(site).node(index).name] = {"seed_share": sum((site, index) in s for s in sets) / len(sets)}
    if result.jaccard_min < LOW_JACCARD:
        out.flags.append(f"Pruning with other seeds finds other circuits: their node sets overlap as little as Jaccard "
                         f"{result.jaccard_min:.2f} (mean {result.jaccard_mean:.2f}) over seeds {seed_list}, and only "
                         f"{len(result.core_nodes)} nodes are in every circuit. Read this circuit's nodes as one "
                         "solution among several, not as the model's mechanism.")
    ood_spread = result.ood_loss_spread
    if result.ood_loss is not None and ood_spread >= OOD_SPREAD_MIN and ood_spread > OOD_SPREAD_RATIO * result.loss_spread:
        out.flags.append(f"Circuits from different seeds agree in distribution (test losses within {result.loss_spread:.3f}) "
                         f"but not out of distribution (OOD losses spread over {ood_spread:.3f}): which circuit pruning "
                         "returns decides how it generalises.")
    own = jaccard(sets[0], node_set(circuit))
    if own < 1.0:
        out.flags.append(f"Re-pruning with the circuit's own seed ({circuit.seed}) and config gives a different circuit "
                         f"(Jaccard {own:.2f} with this one): the model, its node means or the pruning code differ "
                         "from when the circuit was found.")
    return out


# ---------------------------------------------------------------------------------------------- command line
#: shown under "examples:" in ``--help``
EXAMPLES = """
sparselens seeds --model sparse-pygen-2l-128 --task single_double_quote --seeds 0,1,2
torchrun --nproc_per_node 3 -m sparselens.cli seeds --model sparse-pygen-2l-128 --task single_double_quote
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model directory or registered name")
    parser.add_argument("--task", required=True, help="a registered task name")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated pruning seeds (default: %(default)s)")
    parser.add_argument("--target", type=float, default=0.15, help="target loss per pair (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes on this machine, per rank under torchrun (default: one per seed up to the CPUs)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:LOCAL_RANK under torchrun) (default: %(default)s)")
    parser.add_argument("--out", default=None, help="write the result (circuits, Jaccard matrix, losses) to this JSON file")
    add_prune_arguments(parser, seed=None)  # --seed is refused in run(): --seeds replaces it


def run(args: argparse.Namespace) -> int:
    from sparselens import HookedSparseTransformer
    from sparselens.tasks import get_task

    if args.seed is not None:
        raise ValueError("--seed is the seed of one prune; give the seeds to compare as --seeds 0,1,2")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise ValueError(f"--seeds must be integers separated by commas, got {args.seeds!r}") from None
    config = PruneConfig.from_dict({f.name: getattr(args, f.name) for f in dataclasses.fields(PruneConfig) if f.name != "seed"})
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    model = HookedSparseTransformer.from_pretrained(args.model, device=device)
    task = get_task(args.task, tokenizer=model.tokenizer)
    result = seed_stability(model, task, seeds, target_loss=args.target, config=config, workers=args.workers)
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.summary())
        if args.out:
            print(f"written to {result.save(args.out)}", file=sys.stderr)
    return 0

