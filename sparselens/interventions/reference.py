"""The reference run: the unpruned model's run on one batch, computed once (DESIGN.md).

Everything that compares a circuit with its model on a batch needs the same things from the full
model on that batch: its logits, its node activations (the resample source), its RMSNorm scales
(frozen norms) and its attention patterns. :class:`ReferenceRun` holds them, from ONE
``run_with_cache``; pruning, bisection, evaluation, the faithfulness suite and the viewer take it
instead of re-running the model.

Resample ablation (METHOD.md section 4) takes each prompt's replacement from a prompt with the
OTHER answer, aligned at the read position: for pair ``i`` (rows ``i`` and ``n + i`` of a task
batch) the A prompt takes its replacement from the next B prompt (``n + (i + 1) % n``) and the B
prompt from the next A prompt, skipping any whose answer equals the row's own (identifier tasks can
share answers); position ``p`` of the row reads position ``p + read_pos[src] - read_pos[row]`` of the
source, clamped to the source's first token (the end-of-text token every prompt starts with).
With ``resample_from=corpus_tokens`` the replacement is the activation of pretraining text at the
same position instead (one more forward, on those tokens).

Examples:
    >>> batch = task.batch(n=64, split="val")
    >>> ref = ReferenceRun.of(model, batch)               # one forward of the full model
    >>> hooks = circuit_hooks(model, mask, "resample", reference=ref, freeze_norms=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer


def _reference_hooks(model: "HookedSparseTransformer") -> set[str]:
    names = {site.hook_name for site in model.node_sites}
    names |= {name for name in model.hook_dict if name.endswith(("hook_scale", "hook_pattern", "hook_sink"))}
    return names


@dataclass
class ReferenceRun:
    """The full model's logits and cached activations on one batch.

    Attributes:
        tokens: ``[batch, pos]`` the batch's tokens.
        logits: ``[batch, pos, d_vocab]`` the full model's logits (no gradient).
        activations: hook name -> activation, for every node site, every ``*.hook_scale``, and the
            attention ``hook_pattern``/``hook_sink``.
        read_pos, correct: ``[batch]`` a task batch's read positions and answers (None for plain tokens).
        resample_activations: with ``resample_from`` pretraining tokens, their node activations.
    """

    tokens: Int[Tensor, "batch pos"]
    logits: Float[Tensor, "batch pos d_vocab"]
    activations: dict[str, Tensor]
    read_pos: Optional[Int[Tensor, " batch"]] = None
    correct: Optional[Int[Tensor, " batch"]] = None
    resample_activations: Optional[dict[str, Tensor]] = None
    _resampled: Optional[dict[str, Tensor]] = field(default=None, repr=False)

    @classmethod
    @torch.no_grad()
    def of(
        cls, model: "HookedSparseTransformer", batch: Any, resample_from: Optional[Int[Tensor, "batch pos"]] = None
    ) -> "ReferenceRun":
        """Run ``model`` once on ``batch`` (a ``TaskBatch``, or a token tensor ``[batch, pos]``).

        Args:
            resample_from: pretraining tokens ``[batch, pos]`` (the batch's shape) to resample from
                instead of the batch's own prompts with the other answer.
        """
        tokens = batch if isinstance(batch, Tensor) else batch.tokens
        names = _reference_hooks(model)
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        resample = None
        if resample_from is not None:
            if tuple(resample_from.shape) != tuple(tokens.shape):
                raise ValueError(f"resample_from tokens have shape {tuple(resample_from.shape)}; they must match the "
                                 f"batch's {tuple(tokens.shape)} (one pretraining row per prompt, same length)")
            sites = {site.hook_name for site in model.node_sites}
            _, other = model.run_with_cache(resample_from.to(tokens.device), names_filter=lambda n: n in sites, return_type=None)
            resample = dict(other.cache_dict)
        return cls(
            tokens=tokens, logits=logits, activations=dict(cache.cache_dict),
            read_pos=None if isinstance(batch, Tensor) else batch.read_pos.to(tokens.device),
            correct=None if isinstance(batch, Tensor) else batch.correct.to(tokens.device),
            resample_activations=resample,
        )

    def norm_scales(self) -> dict[str, Tensor]:
        """Every ``*.hook_scale`` of the reference run (for frozen norms)."""
        return {name: act for name, act in self.activations.items() if name.endswith("hook_scale")}

    def resampled(self) -> dict[str, Tensor]:
        """Per node-site hook, the replacement activations for resample ablation (module docstring)."""
        if self._resampled is None:
            if self.resample_activations is not None:
                self._resampled = self.resample_activations
            else:
                rows, positions = self.resample_index()
                self._resampled = {
                    name: act[rows[:, None], positions] for name, act in self.activations.items()
                    if not name.endswith(("hook_scale", "hook_pattern", "hook_sink"))
                }
        return self._resampled

    def resample_index(self) -> tuple[Int[Tensor, " batch"], Int[Tensor, "batch pos"]]:
        """``(source row [batch], source position [batch, pos])`` of every row's replacement."""
        if self.read_pos is None or self.correct is None:
            raise ValueError("resample ablation within a batch needs a task batch (prompt pairs with answers); "
                             "for plain tokens pass resample_from= pretraining tokens")
        n_rows = self.tokens.shape[0]
        if n_rows % 2:
            raise ValueError(f"a task batch has an even number of rows (A prompts, then B prompts); got {n_rows}")
        n = n_rows // 2
        correct = self.correct.tolist()
        rows = []
        for row in range(n_rows):
            pair, other_half = row % n, (n if row < n else 0)
            candidates = [other_half + (pair + 1 + j) % n for j in range(n)]
            source = next((c for c in candidates if correct[c] != correct[row]), None)
            if source is None:
                raise ValueError(f"resample ablation: no prompt in the batch has an answer other than row {row}'s")
            rows.append(source)
        src = torch.tensor(rows, device=self.tokens.device)
        offset = self.read_pos[src] - self.read_pos
        positions = torch.arange(self.tokens.shape[1], device=self.tokens.device)[None, :] + offset[:, None]
        return src, positions.clamp(0, self.tokens.shape[1] - 1)
