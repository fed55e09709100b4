"""``prune(model, task) -> Circuit`` and ``prune_sweep``: learn a node mask, then bisect to target losses (METHOD.md section 4)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from tqdm.auto import tqdm

from sparselens.interventions.ablation import Ablation
from sparselens.model.checkpoint import model_fingerprint
from sparselens.prune.circuit import Circuit, circuit_hooks, count_edges
from sparselens.prune.learned_mask import LearnedMask

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer


class MaskTrainer:
    """One run of mask learning: ``step(i)`` does one optimizer step on train pairs.

    ``prune`` drives it; ``benchmarks/prune.py`` times it. The model's parameters must be frozen
    (``requires_grad=False``) by the caller; only ``self.mask`` learns.
    """

    def __init__(self, model: "HookedSparseTransformer", task: Any, ablation: str, means: Optional[dict[str, torch.Tensor]],
                 freeze_norms: bool, seed: int, steps: int, batch_size: int, k_coef: float, lr: float,
                 weight_decay: float, init_bias: float, init_noise: float, temperature: float, grad_clip: float):
        self.model, self.task, self.ablation, self.means, self.freeze_norms = model, task, ablation, means, freeze_norms
        self.seed, self.batch_size, self.k_coef, self.grad_clip = seed, batch_size, k_coef, grad_clip
        gen = torch.Generator().manual_seed(seed)
        self.mask = LearnedMask(model.node_registry, init_bias, init_noise, temperature, generator=gen).to(model.W_E.device)
        self.optimizer = torch.optim.AdamW(self.mask.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda i: 1 - i / steps)

    def batch(self, i: int) -> Any:
        return self.task.batch(n=self.batch_size, split="train", seed=self.seed * 1_000_003 + i).to(self.model.W_E.device)

    def step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on ``batch``; returns (task loss, kept count), both 0-d tensors."""
        masks = self.mask.masks()
        hooks = circuit_hooks(self.model, masks, self.ablation, batch.tokens, self.means, self.freeze_norms)
        task_loss = self.task.loss_from_logits(self.model.run_with_hooks(batch.tokens, fwd_hooks=hooks), batch)
        kept = sum(m.sum() for m in masks.values())
        self.optimizer.zero_grad(set_to_none=True)
        (task_loss + self.k_coef * kept).backward()
        torch.nn.utils.clip_grad_norm_(self.mask.parameters(), self.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.mask.clamp_()
        return task_loss.detach(), kept.detach()


def prune(model: "HookedSparseTransformer", task: Any, target_loss: float = 0.15, **kwargs: Any) -> Circuit:
    """Prune ``model`` to the smallest circuit that reaches ``target_loss`` on ``task``.

    See :func:`prune_sweep` for the algorithm and every keyword argument.
    """
    return prune_sweep(model, task, [target_loss], **kwargs)[0]


def prune_sweep(
    model: "HookedSparseTransformer",
    task: Any,
    targets: Sequence[float],
    ablation: str = "mean",
    freeze_norms: bool = False,
    seed: int = 0,
    means: Optional[dict[str, torch.Tensor]] = None,
    steps: int = 300,
    batch_size: int = 64,
    eval_pairs: int = 128,
    k_coef: float = 1e-4,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    init_bias: float = 0.1,
    init_noise: float = 0.01,
    temperature: float = 1.0,
    grad_clip: float = 1.0,
    progress: bool = True,
) -> list[Circuit]:
    """Prune ``model`` on ``task`` to one circuit per target loss.

    1. Learn one ``tau`` per node (``m = 1[tau >= 0]``, sigmoid straight-through gradient) on
       train pairs, minimising ``task_loss + k_coef * sum(m)`` with AdamW (betas 0.9/0.95),
       gradient clipping and linear LR decay; ``tau`` is clamped to [-1, 1].
    2. Rank nodes by ``tau``; for each target, bisect the number kept so the circuit just reaches
       it on validation pairs (assuming loss falls as nodes are added). One learned ranking
       serves every target.
    3. Report the losses of the full model, the circuit and the empty circuit on test pairs.

    Task losses are per pair, averaged over the pair's two prompts (the paper's stored numbers are
    sums, twice ours). Deterministic for a given seed on CPU.

    Args:
        ablation: ``"mean"`` (needs ``means``: see :func:`sparselens.interventions.pretraining_means`),
            ``"zero"`` or ``"resample"`` (each prompt takes the next prompt's activations).
        freeze_norms: patch the unpruned model's RMSNorm scales on the same batch into every
            pruned run, so a circuit cannot win by letting a norm blow up a small signal.
        steps, batch_size (pairs), eval_pairs, k_coef, lr, weight_decay, init_bias, init_noise,
            temperature, grad_clip: METHOD.md section 4's hyperparameters.
    """
    ablation = Ablation.parse(ablation).value
    if not targets:
        raise ValueError("give at least one target loss")
    if ablation == "mean" and means is None:
        raise ValueError("mean ablation needs means=...: compute them over the pretraining distribution with "
                         "sparselens.interventions.pretraining_means(model)")
    device = model.W_E.device
    was_training = model.training
    model.eval()
    params = {p: p.requires_grad for p in model.parameters()}
    for p in params:
        p.requires_grad_(False)
    try:
        val = task.batch(n=eval_pairs, split="val", seed=seed).to(device)
        test = task.batch(n=eval_pairs, split="test", seed=seed).to(device)

        def loss_of(mask, batch) -> float:
            with torch.no_grad():
                hooks = circuit_hooks(model, mask, ablation, batch.tokens, means, freeze_norms)
                return float(task.loss_from_logits(model.run_with_hooks(batch.tokens, fwd_hooks=hooks), batch))

        with torch.no_grad():
            full_val = float(task.loss(model, val))
        if full_val > min(targets):
            raise ValueError(
                f"the full model's loss on {task.name!r} (validation) is {full_val:.4f}, above target_loss="
                f"{min(targets)}: no circuit of this model can be expected to reach it. Raise the target, or "
                "check the model can do the task (task.loss(model, task.batch(...)))."
            )

        trainer = MaskTrainer(model, task, ablation, means, freeze_norms, seed, steps, batch_size, k_coef, lr,
                              weight_decay, init_bias, init_noise, temperature, grad_clip)
        bar = tqdm(range(steps), desc=f"pruning {task.name}", disable=not progress)
        for step in bar:
            task_loss, kept = trainer.step(trainer.batch(step))
            if step % 10 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{float(task_loss):.3f}", kept=int(kept))

        learned = trainer.mask
        ranking = learned.ranking()
        n_total = model.node_registry.n_nodes
        if loss_of(learned.top(n_total, ranking), val) > min(targets):
            raise ValueError(f"even with every node kept the masked model misses target_loss={min(targets)}")
        model_test = float(task.loss(model, test))
        empty_test = loss_of(learned.top(0, ranking), test)
        target_ids = tuple(sorted({int(t) for t in torch.cat([test.correct, test.wrong]).tolist()}))
        fingerprint = model_fingerprint(model)
        hyperparameters = dict(steps=steps, batch_size=batch_size, eval_pairs=eval_pairs, k_coef=k_coef, lr=lr,
                               weight_decay=weight_decay, init_bias=init_bias, init_noise=init_noise,
                               temperature=temperature, grad_clip=grad_clip)
        site_means = ({site.name: means[site.hook_name].flatten().tolist() for site in model.node_sites}
                      if ablation == "mean" else None)

        circuits = []
        for target in tqdm(targets, desc="bisecting circuit size", disable=not progress or len(targets) == 1):
            lo, hi = 0, n_total
            while lo < hi:
                mid = (lo + hi) // 2
                if loss_of(learned.top(mid, ranking), val) <= target:
                    hi = mid
                else:
                    lo = mid + 1
            mask = learned.top(hi, ranking)
            circuits.append(Circuit(
                kept={name: vec.nonzero().flatten().tolist() for name, vec in mask.keep.items()},
                edge_counts=count_edges(model, mask, target_ids),
                task=task.name,
                target_ids=target_ids,
                ablation=ablation,
                freeze_norms=freeze_norms,
                losses={"target": float(target), "model": model_test, "circuit": loss_of(mask, test),
                        "empty": empty_test, "circuit_val": loss_of(mask, val)},
                model_fingerprint=fingerprint,
                seed=seed,
                hyperparameters=hyperparameters,
                means=site_means,
            ))
        return circuits
    finally:
        for p, flag in params.items():
            p.requires_grad_(flag)
        model.train(was_training)
