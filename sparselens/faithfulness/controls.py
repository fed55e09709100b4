"""Check ``controls``: prune again where there is no circuit to find (METHOD.md section 6).

The critique of weight-sparse circuits found that pruning reaches low loss on nonsense tasks with
small circuits: the mask can make the pruned model output anything consistent even where the full
model does not. So, with the circuit's own :class:`~sparselens.prune.PruneConfig` (``circuit.config``:
its ablation, norms, seed, steps...), its target loss (``circuit.losses["target"]``) and its node
means, this check prunes twice more:

- ``nonsense``: the same model on the task's own prompts with the targets swapped to an arbitrary,
  consistent pair of tokens (:func:`nonsense_task`: one token after every A prompt, another after
  every B prompt, drawn from the report's seed);
- ``shuffled``: a copy of the model whose every weight matrix keeps its sparsity pattern and its
  values, the nonzero values permuted among its own nonzero positions (:func:`shuffled_weights`);
  for mean ablation its node means are its own, over the pretraining corpus the model names (as
  many batches as :func:`~sparselens.interventions.pretraining_means` takes), else over the task's
  training pairs.

The bisection's upper bound is the learned mask's own kept count (``bound="learned"`` of
:func:`sparselens.prune.prune_sweep`), so a control may find a circuit where its full model misses
the target. Metrics (every loss on the circuit's ``eval_pairs`` validation pairs, what the
bisection compares with the target): ``control_target``; ``control_real_nodes``, ``_edges`` and
``_loss`` (the circuit evaluated); per control ``c``, ``control_c_nodes``, ``control_c_edges``,
``control_c_loss`` (its circuit's; when no circuit reaches the target, NaN sizes, the loss the
learned mask reached, and a note) and ``control_c_loss_model`` (the full or shuffled model's own
loss on it). A flag when a control reaches the target with a circuit no bigger than twice the real one.

Not a default check (it prunes twice): ``evaluate(model, circuit, task, checks=["controls"])``.
"""

from __future__ import annotations

import inspect
import math
import random
import re
from copy import deepcopy
from typing import TYPE_CHECKING, Callable, Optional

import torch
from tqdm.auto import tqdm

from sparselens.faithfulness.context import CheckResult, EvalContext
from sparselens.faithfulness.registry import register
from sparselens.interventions.ablation import Ablation
from sparselens.prune.circuit import Circuit
from sparselens.prune.config import PruneConfig
from sparselens.prune.pruner import Skipped, _sweep

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.tasks.base import RetargetedTask, Task

#: what a control prunes: its label in sentences, the model, the task, the node means (None unless mean ablation)
Setup = tuple[str, "HookedSparseTransformer", "Task", Optional[dict[str, torch.Tensor]]]

CONTROLS = ("nonsense", "shuffled")
#: a control circuit with at most this many times the real circuit's nodes is flagged
SIZE_RATIO = 2
#: nonsense targets are word tokens (a space, then letters) where the tokenizer has two that fit
_WORD = re.compile(r" [A-Za-z]+")
#: candidate pairs tried for the nonsense targets before giving up
_MAX_TRIES = 64


def shuffled_weights(model: "HookedSparseTransformer", seed: int = 0) -> "HookedSparseTransformer":
    """A copy of ``model`` whose every weight matrix has its nonzero values permuted among its own nonzeros.

    Every parameter of two or more dimensions (``W_E`` ``[d_vocab, d_model]``, the attention and MLP
    projections, ``W_U``, positional and bigram tables) keeps its sparsity pattern and its multiset of
    values; only which nonzero position holds which value changes (seeded by ``seed``). Vectors (norm
    weights, biases, sinks) are left as they are; ``model`` is not touched.
    """
    shuffled = deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in shuffled.parameters():
            if p.dim() < 2:
                continue
            where = p.nonzero(as_tuple=True)
            values = p[where]
            p[where] = values[torch.randperm(values.numel(), generator=gen).to(p.device)]
    return shuffled


def nonsense_task(task: "Task", vocab_size: int, seed: int = 0) -> "RetargetedTask":
    """``task``'s prompts with an arbitrary, consistent pair of answers: one token after every A prompt, another after every B.

    The pair is drawn reproducibly from ``seed`` among the tokenizer's ids below ``vocab_size`` (the
    model's ``d_vocab``) that are one token (decoded, they encode back to themselves), not special,
    not one of the task's own targets, and split off after the task's prompts (:meth:`Task.with_targets`
    checks); word tokens (``" foo"``) first, any token where there are no two such.

    Raises:
        ValueError: no such pair among the tokenizer's tokens.
    """
    tok = task.tokenizer
    excluded = set(task.target_ids.values()) | set(getattr(tok, "all_special_ids", []))
    ids = [i for i in range(min(vocab_size, len(tok))) if i not in excluded]
    random.Random(f"controls/nonsense/{seed}").shuffle(ids)
    tries = 0
    for accept in (_WORD.fullmatch, lambda text: True):
        pending: Optional[str] = None
        for i in ids:
            text = tok.decode([i])
            if not accept(text) or tok.encode(text, add_special_tokens=False) != [i]:
                continue
            if pending is None:
                pending = text
                continue
            try:
                return task.with_targets(pending, text, name=f"nonsense {task.name}")
            except ValueError:  # one of the two is not split off after these prompts: try the next pair
                pending, tries = None, tries + 1
            if tries >= _MAX_TRIES:
                break
    raise ValueError(f"task {task.name!r}: found no pair of single tokens (other than its targets, below id {vocab_size}) "
                     f"that the tokenizer splits off after its prompts in {tries} tries; the nonsense control needs one")


def _settings(circuit: Circuit) -> tuple[PruneConfig, float]:
    """The circuit's PruneConfig and target loss, or a ValueError saying how to supply them."""
    if not circuit.config:
        raise ValueError("the controls check prunes again with the circuit's own PruneConfig, but this circuit stores "
                         "none (circuit.config is empty); re-prune it with sparselens.prune (which records its config), "
                         "or set circuit.config = PruneConfig(...).to_dict() to the settings it was found with")
    target = circuit.losses.get("target")
    if target is None or not math.isfinite(target):
        raise ValueError(f"the controls check prunes to the circuit's own target loss, but circuit.losses has no finite "
                         f"'target' (got {target!r}); set circuit.losses['target'] to the loss it was pruned to")
    return PruneConfig.from_dict(circuit.config), float(target)


def _own_means(ctx: EvalContext, model: "HookedSparseTransformer", config: PruneConfig) -> tuple[dict[str, torch.Tensor], str]:
    """Node means of ``model`` (a copy of ``ctx.model``) and where they come from.

    Over the pretraining corpus ``ctx.model`` names (the batches :func:`pretraining_means` takes,
    not cached: a shuffled copy has the same fingerprint), else over the task's training pairs.
    """
    from sparselens.data import iter_batches, load_corpus
    from sparselens.interventions.means import compute_means, pretraining_corpus, pretraining_means

    device = model.W_E.device
    try:
        source, options = pretraining_corpus(ctx.model)
    except ValueError:
        pool = ctx.task.batch(n=config.train_pairs, split="train", seed=config.seed).tokens.to(device)
        return compute_means(model, pool.split(config.batch_size), progress=False), f"the task's {config.train_pairs} training pairs"
    defaults = inspect.signature(pretraining_means).parameters
    n_batches, batch_size = defaults["n_batches"].default, defaults["batch_size"].default
    corpus = load_corpus(source, n_ctx=model.cfg.n_ctx, split="train", tokenizer=model.tokenizer, progress=ctx.progress, **options)
    batches = (b.to(device) for b in iter_batches(corpus, batch_size=batch_size, seed=0))
    means = compute_means(model, batches, n_batches=n_batches, progress=ctx.progress)
    return means, f"{n_batches} batches of {batch_size} from its pretraining corpus {source!r}"


def _nonsense(ctx: EvalContext, ablation: Ablation, config: PruneConfig, notes: list[str]) -> "Setup":
    task = nonsense_task(ctx.task, ctx.model.cfg.d_vocab, ctx.seed)
    target_a, target_b = task.new_targets
    return f"nonsense control (targets {target_a!r}/{target_b!r})", ctx.model, task, ctx.means_for(ablation)


def _shuffled(ctx: EvalContext, ablation: Ablation, config: PruneConfig, notes: list[str]) -> "Setup":
    model = shuffled_weights(ctx.model, ctx.seed)
    label = "shuffled-weights control (each weight matrix's nonzero values permuted among its nonzeros)"
    if ablation.needs != "means":
        return label, model, ctx.task, None
    means, source = _own_means(ctx, model, config)
    notes.append(f"the shuffled-weights control's node means are its own, over {source}")
    return label, model, ctx.task, means


_SETUPS: dict[str, Callable[[EvalContext, Ablation, PruneConfig, list[str]], "Setup"]] = {"nonsense": _nonsense, "shuffled": _shuffled}


def _record(out: CheckResult, name: str, label: str, found: Optional[Circuit], skipped: list[Skipped],
            real: Circuit, target: float) -> None:
    """The control's metrics, and its flag or its note."""
    key = f"control_{name}"
    if found is None:
        out.metrics[f"{key}_nodes"] = out.metrics[f"{key}_edges"] = math.nan
        out.metrics[f"{key}_loss"] = skipped[0].loss
        out.notes.append(f"{key}_nodes and _edges are NaN: the {label} reaches no circuit of loss {target:g} "
                         f"({skipped[0].reason})")
        return
    out.metrics[f"{key}_nodes"], out.metrics[f"{key}_edges"] = float(found.n_nodes), float(found.n_edges)
    out.metrics[f"{key}_loss"] = found.losses["circuit_val"]
    if found.n_nodes <= SIZE_RATIO * real.n_nodes:
        out.flags.append(f"The {label} reaches the target {target:g} with {found.n_nodes} nodes, no more than twice the "
                         f"real circuit's {real.n_nodes} (the unpruned model's loss there: "
                         f"{out.metrics[f'{key}_loss_model']:.3f}): a small circuit with low loss is not evidence on its own.")


@register("controls", default=False,
          description="prune again on a nonsense version of the task and on a shuffled-weights model; flag small control circuits")
def controls(ctx: EvalContext) -> CheckResult:
    """Prune with the circuit's own settings on a nonsense version of its task and on a shuffled-weights model."""
    config, target = _settings(ctx.circuit)
    ablation = Ablation.parse(config.ablation)
    real, out = ctx.circuit, CheckResult()
    m = out.metrics
    m["control_target"] = target
    m["control_real_nodes"], m["control_real_edges"] = float(real.n_nodes), float(real.n_edges)
    m["control_real_loss"] = float(real.losses.get("circuit_val", math.nan))
    if math.isnan(m["control_real_loss"]):
        out.notes.append("control_real_loss is NaN: the circuit stores no validation loss (losses['circuit_val'])")
    bar = tqdm(CONTROLS, desc="controls", disable=not ctx.progress, leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        label, model, task, means = _SETUPS[name](ctx, ablation, config, out.notes)
        val = task.batch(n=config.eval_pairs, split="val", seed=config.seed)
        m[f"control_{name}_loss_model"] = float(task.loss(model, val))
        circuits, skipped = _sweep(model, task, [target], config, means, ctx.progress, bound="learned")
        _record(out, name, label, circuits[0] if circuits else None, skipped, real, target)
    return out
