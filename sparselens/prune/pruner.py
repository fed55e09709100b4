"""``prune(model, task) -> Circuit`` and ``prune_sweep``: learn a node mask, then bisect to target losses (METHOD.md section 4)."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence, cast

import torch
from tqdm.auto import tqdm

from sparselens.interventions.ablation import Ablation
from sparselens.interventions.adversary import Adversary
from sparselens.interventions.reference import ReferenceRun
from sparselens.model.fingerprint import model_fingerprint
from sparselens.nodes import NodeMask
from sparselens.prune.circuit import Circuit, circuit_hooks, circuit_loss
from sparselens.prune.config import PruneConfig
from sparselens.prune.edges import count_edges, count_residual_links, edge_use
from sparselens.prune.learned_mask import LearnedMask

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.tasks.base import Task, TaskBatch

logger = logging.getLogger(__name__)

#: a prune expected to take longer than this says so before it starts
SLOW_PRUNE_SECONDS = 180.0
#: the bisection's upper bound: every node, or the learned mask's own kept count (for controls)
BOUNDS = ("all", "learned")


class Skipped(NamedTuple):
    """A target that got no circuit: the best validation loss the sweep could offer it, and why."""

    target: float
    loss: float
    reason: str


class MaskTrainer:
    """One run of mask learning: ``step(batch)`` does one optimizer step on a batch of train pairs.

    ``prune`` drives it; ``benchmarks/prune.py`` times it. The model's parameters must be frozen
    (``requires_grad=False``) by the caller; only ``self.mask`` learns. The training pairs are
    generated and tokenized once (``config.train_pairs`` of them); ``batch(i)`` draws step ``i``'s.
    """

    def __init__(self, model: "HookedSparseTransformer", task: "Task", config: PruneConfig,
                 means: Optional[dict[str, torch.Tensor]] = None):
        self.model, self.task, self.config, self.means = model, task, config, means
        self.ablation = Ablation.parse(config.ablation)
        self.device = model.W_E.device
        gen = torch.Generator().manual_seed(config.seed)
        self.mask = LearnedMask(model.node_registry, config.init_bias, config.init_noise, config.temperature,
                                generator=gen).to(self.device)
        self.optimizer = torch.optim.AdamW(self.mask.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           betas=(0.9, 0.95))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda i: 1 - i / config.steps)
        self.pool = task.batch(n=config.train_pairs, split="train", seed=config.seed)
        self.history: list[tuple[int, float, int]] = []  # (step, train loss, nodes kept), every 10 steps
        self._draws = torch.Generator().manual_seed(config.seed + 7)  # stochastic ablation's r
        self.adversary = (Adversary(model.node_registry, "random", torch.Generator().manual_seed(config.seed + 11), self.device)
                          if self.ablation.interpolation == "adversarial" else None)

    def batch(self, i: int) -> "TaskBatch":
        """Step ``i``'s batch: ``batch_size`` pairs drawn from the pool (a pure function of the seed and ``i``)."""
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + i)
        pairs = torch.randperm(self.pool.n_pairs, generator=gen)[: self.config.batch_size]
        return self.pool.select(pairs).to(self.device)

    def step(self, batch: "TaskBatch") -> tuple[torch.Tensor, torch.Tensor]:
        """One step on ``batch``; returns (task loss, kept count), both 0-d tensors on the device."""
        config, kind = self.config, self.ablation.interpolation
        needs_reference = self.ablation.needs == "resample" or config.freeze_norms or kind == "adversarial"
        reference = ReferenceRun.of(self.model, batch) if needs_reference else None
        interpolation = None
        if kind == "random":  # stochastic: r ~ U(0, 1) per node and prompt
            rows = batch.tokens.shape[0]
            interpolation = {s.name: torch.rand(rows, s.n_nodes, generator=self._draws).to(self.device)
                             for s in self.model.node_sites}
        elif kind == "adversarial":  # the adversary moves first, against the current mask
            assert self.adversary is not None and reference is not None  # made for adversarial ablation
            with torch.no_grad():
                hard = {name: m.detach() for name, m in self.mask.masks().items()}
            self.adversary.ascend(self.model, hard, self.ablation, batch, reference, self.means, config.freeze_norms,
                                  config.adversary_steps, config.adversary_step)
            interpolation = self.adversary.r
        masks = self.mask.masks()
        hooks = circuit_hooks(self.model, masks, self.ablation.base, reference, self.means, config.freeze_norms,
                              interpolation=interpolation)
        task_loss = self.task.loss_from_logits(self.model.run_with_hooks(batch.tokens, fwd_hooks=hooks), batch)
        kept = cast(torch.Tensor, sum(m.sum() for m in masks.values()))  # a tensor: there is a mask per node site
        self.optimizer.zero_grad(set_to_none=True)
        (task_loss + self.config.k_coef * kept).backward()
        torch.nn.utils.clip_grad_norm_(self.mask.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.mask.clamp_()
        return task_loss.detach(), kept.detach()


def prune(
    model: "HookedSparseTransformer",
    task: "Task",
    target_loss: float = 0.15,
    config: Optional[PruneConfig] = None,
    *,
    means: Optional[dict[str, torch.Tensor]] = None,
    progress: bool = True,
    bound: str = "all",
) -> Circuit:
    """Prune ``model`` to the smallest circuit that reaches ``target_loss`` on ``task``.

    ``config`` holds every option (:class:`PruneConfig`, its defaults when None); see
    :func:`prune_sweep` for the algorithm and ``bound``. Raises ``ValueError`` if the target cannot be reached.
    """
    circuits, skipped = _sweep(model, task, [target_loss], config or PruneConfig(), means, progress, bound)
    if skipped:
        raise ValueError(skipped[0].reason)
    return circuits[0]


def prune_sweep(
    model: "HookedSparseTransformer",
    task: "Task",
    targets: Sequence[float],
    config: Optional[PruneConfig] = None,
    *,
    means: Optional[dict[str, torch.Tensor]] = None,
    progress: bool = True,
    bound: str = "all",
) -> list[Circuit]:
    """Prune ``model`` on ``task`` to one circuit per reachable target loss.

    1. Learn one ``tau`` per node (``m = 1[tau >= 0]``, sigmoid straight-through gradient) on
       train pairs, minimising ``task_loss + k_coef * sum(m)`` with AdamW (betas 0.9/0.95),
       gradient clipping and linear LR decay; ``tau`` is clamped to [-1, 1].
    2. Rank nodes by ``tau``; for each target, bisect the number kept so the circuit just reaches
       it on ``eval_pairs`` validation pairs (assuming loss falls as nodes are added). One learned
       ranking serves every target; the full model's reference run on the validation batch is
       computed once for the whole bisection.
    3. Report the losses of the full model, the circuit and the empty circuit on ``eval_pairs``
       test pairs (``circuit.evaluate(model, task)`` gives the same numbers).

    Task losses are per pair, averaged over the pair's two prompts (the paper's stored numbers are
    sums, twice ours). Deterministic for a given seed on CPU. A target below what the model itself
    reaches, or one the fully kept mask misses, is skipped with a warning (the other targets still
    get their circuits); if every target is skipped, ``ValueError`` says why.

    ``bound="learned"`` is for controls (:mod:`sparselens.faithfulness.controls`), tasks the model
    was never trained on, where a mask can make the pruned model do what the full model does not:
    the bisection's upper bound is then the learned mask's own kept count (``1[tau >= 0]``), which
    must reach the target, and a target below the full model's loss is not skipped.

    Args:
        config: the options (:class:`PruneConfig`).
        means: node means for mean ablation; default :func:`sparselens.interventions.pretraining_means`
            of the model (shipped with it, or computed once over its own pretraining corpus and cached).
        progress: progress bars and the time estimate.
        bound: ``"all"`` (every node) or ``"learned"`` (the learned mask's kept count; see above).
    """
    circuits, skipped = _sweep(model, task, targets, config or PruneConfig(), means, progress, bound)
    if not circuits:
        raise ValueError("; ".join(s.reason for s in skipped))
    for s in skipped:
        logger.warning(s.reason)
        if progress:
            tqdm.write(f"note: {s.reason}", file=sys.stderr)
    return circuits


def _sweep(model: "HookedSparseTransformer", task: "Task", targets: Sequence[float], config: PruneConfig,
           means: Optional[dict[str, torch.Tensor]], progress: bool,
           bound: str = "all") -> tuple[list[Circuit], list[Skipped]]:
    """Circuits for the reachable targets, and a :class:`Skipped` for each other one (``bound``: see :func:`prune_sweep`)."""
    if not targets:
        raise ValueError("give at least one target loss")
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
    ablation = Ablation.parse(config.ablation)
    if ablation.needs == "means" and means is None:
        from sparselens.interventions.means import pretraining_means

        means = pretraining_means(model, progress=progress)
    device = model.W_E.device
    was_training = model.training
    model.eval()
    params = {p: p.requires_grad for p in model.parameters()}
    for p in params:
        p.requires_grad_(False)
    try:
        val = task.batch(n=config.eval_pairs, split="val", seed=config.seed).to(device)
        test = task.batch(n=config.eval_pairs, split="test", seed=config.seed).to(device)
        val_ref, test_ref = ReferenceRun.of(model, val), ReferenceRun.of(model, test)
        model_val = float(task.loss_from_logits(val_ref.logits, val))
        floor = model_val if bound == "all" else -math.inf  # a control's mask may beat its model
        skipped = [Skipped(t, model_val, f"target {t} skipped: the full model reaches {model_val:.4f} on {task.name} "
                           f"({config.eval_pairs} validation pairs), above the target; no circuit of it can be "
                           "expected to reach it") for t in targets if t < floor]
        reachable = sorted(t for t in targets if t >= floor)
        if not reachable:
            return [], skipped

        trainer = MaskTrainer(model, task, config, means)
        _train(trainer, task, config, progress)

        learned = trainer.mask
        ranking = learned.ranking()
        n_total = model.node_registry.n_nodes

        def loss_of(mask: NodeMask, batch: "TaskBatch", reference: ReferenceRun) -> float:
            return circuit_loss(model, task, mask, batch, ablation.base, reference, means, config.freeze_norms)

        n_upper = n_total if bound == "all" else sum(int((tau >= 0).sum()) for tau in learned.tau.values())
        upper_val = loss_of(learned.top(n_upper, ranking), val, val_ref)
        at_bound = "with every node kept" if bound == "all" else f"with the {n_upper} nodes the learned mask keeps"
        skipped += [Skipped(t, upper_val, f"target {t} skipped: even {at_bound} the masked model reaches {upper_val:.4f} "
                            f"on validation pairs") for t in reachable if t < upper_val]
        reachable = [t for t in reachable if t >= upper_val]
        if not reachable:
            return [], skipped
        model_test = float(task.loss_from_logits(test_ref.logits, test))
        empty_test = loss_of(learned.top(0, ranking), test, test_ref)
        use = edge_use([val, test], torch.cat([test.correct, test.wrong]).tolist())
        fingerprint = model_fingerprint(model)
        site_means = None
        if ablation.needs == "means":
            assert means is not None  # computed above when not given
            site_means = {site.name: (means[site.hook_name] if site.hook_name in means else means[site.name]).flatten().tolist()
                          for site in model.node_sites}

        circuits = []
        bar = tqdm(total=len(reachable) * math.ceil(math.log2(n_upper + 1)), disable=not progress, unit="run",
                   desc=f"bisecting the number of nodes on {config.eval_pairs} validation pairs")
        for target in reachable:
            lo, hi = 0, n_upper
            while lo < hi:
                mid = (lo + hi) // 2
                if loss_of(learned.top(mid, ranking), val, val_ref) <= target:
                    hi = mid
                else:
                    lo = mid + 1
                bar.update(1)
                bar.set_postfix_str(f"target {target:g}: between {lo} and {hi} nodes")
            mask = learned.top(hi, ranking)
            circuits.append(Circuit(
                kept={name: vec.nonzero().flatten().tolist() for name, vec in mask.keep.items()},
                edge_counts=count_edges(model, mask, use),
                residual_links=count_residual_links(model, mask),
                task=task.name,
                target_ids=use.target_ids,
                input_ids=use.input_ids,
                n_positions=use.n_positions,
                ablation=ablation.base.value,  # how it runs; config["ablation"] says how it was found
                freeze_norms=config.freeze_norms,
                losses={"target": float(target), "model": model_test, "circuit": loss_of(mask, test, test_ref),
                        "empty": empty_test, "circuit_val": loss_of(mask, val, val_ref), "model_val": model_val},
                model_fingerprint=fingerprint,
                config=config.to_dict(),
                means=site_means,
                curve=[list(point) for point in trainer.history],
            ))
        bar.total = bar.n  # the bound above is not always reached
        bar.close()
        return circuits, skipped
    finally:
        for p, flag in params.items():
            p.requires_grad_(flag)
        model.train(was_training)


def _train(trainer: MaskTrainer, task: "Task", config: PruneConfig, progress: bool) -> None:
    """Run the mask-learning steps with a labelled progress bar; warn first if it will be slow."""
    bar = tqdm(range(config.steps), desc=f"learning the {task.name} mask", unit="step", disable=not progress)
    start = time.perf_counter()
    for step in bar:
        task_loss, kept = trainer.step(trainer.batch(step))
        if step == 1 and progress:
            eta = (time.perf_counter() - start) / 2 * config.steps
            if eta > SLOW_PRUNE_SECONDS:
                tqdm.write(f"note: {config.steps} mask-learning steps will take about {eta / 60:.0f} minutes here; "
                           "PruneConfig(steps=..., batch_size=...) trades that against the ranking's quality",
                           file=sys.stderr)
        if step % 10 == 0 or step == config.steps - 1:
            trainer.history.append((step + 1, float(task_loss), int(kept)))
            bar.set_postfix_str(f"train loss {trainer.history[-1][1]:.3f}, {trainer.history[-1][2]} nodes kept")
