"""Tasks from templates in a few lines.

Examples:
    >>> from sparselens.tasks import TemplateTask, register_task
    >>> task = TemplateTask(
    ...     "pronoun_simple",
    ...     templates=["when {name} {action},", "after {name} {action},"],
    ...     targets=(" he", " she"),                      # target after A, target after B
    ...     a={"name": ["Leo", "Samuel", "Peter"]},        # slots that make prompt A
    ...     b={"name": ["Mia", "Rita", "Lily"]},           # the same slots for prompt B
    ...     shared={"action": ["ran to the beach", "came home", "fed the cat"]},
    ...     tokenizer=tokenizer,                          # one whose targets are single tokens (not the
    ... )                                                 # shipped Python tokenizer: see docs/tasks.md)
    >>> register_task("pronoun_simple", lambda tokenizer: TemplateTask(..., tokenizer=tokenizer))
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from sparselens.tasks.base import PromptPair, Task


class TemplateTask(Task):
    """A task whose A and B prompts fill one template with different values of some slots.

    Each pair draws a template and one value per ``shared`` slot (the same in A and B), then one
    value per ``a`` slot for prompt A and one per ``b`` slot for prompt B. The target after A is
    ``targets[0]``, after B ``targets[1]``.

    Args:
        name: task name.
        templates: ``str.format`` templates naming every slot in ``a``/``b``/``shared``.
        targets: ``(target_a, target_b)``, each a single token for the tokenizer.
        a: slot -> values used for prompt A.
        b: slot -> values used for prompt B (same slot names as ``a``).
        shared: slot -> values shared by A and B.
        tokenizer, description, default_kind, prepend_bos: as for :class:`Task`.
    """

    def __init__(
        self,
        name: str,
        templates: Sequence[str],
        targets: tuple[str, str],
        a: Mapping[str, Sequence[str]],
        b: Mapping[str, Sequence[str]],
        shared: Mapping[str, Sequence[str]] = {},
        tokenizer: Any = None,
        *,
        description: str = "",
        default_kind: str = "binary",
        prepend_bos: bool = True,
    ):
        if set(a) != set(b):
            raise ValueError(f"task {name!r}: a and b must fill the same slots, got {sorted(a)} and {sorted(b)}")
        if len(targets) != 2 or targets[0] == targets[1]:
            raise ValueError(f"task {name!r}: targets must be two different strings, got {targets!r}")
        slots = set(a) | set(shared)
        for template in templates:
            try:
                template.format(**{s: "" for s in slots})
            except (KeyError, IndexError) as exc:
                raise ValueError(f"task {name!r}: template {template!r} uses a slot with no values: {exc}") from None
        for slot, values in {**a, **b, **shared}.items():
            if not values:
                raise ValueError(f"task {name!r}: slot {slot!r} has no values")
        self.templates = list(templates)
        self.slot_values = ({k: list(v) for k, v in a.items()}, {k: list(v) for k, v in b.items()},
                            {k: list(v) for k, v in shared.items()})
        self.targets = (targets[0], targets[1])
        super().__init__(
            name, self._generate, targets, tokenizer, description=description,
            default_kind=default_kind, prepend_bos=prepend_bos,
        )

    def _generate(self, rng: random.Random, split: str) -> PromptPair:
        a, b, shared = self.slot_values
        template = rng.choice(self.templates)
        common = {k: rng.choice(v) for k, v in shared.items()}
        fill_a = {k: rng.choice(v) for k, v in a.items()}
        fill_b = {k: rng.choice(v) for k, v in b.items()}
        return PromptPair(template.format(**common, **fill_a), template.format(**common, **fill_b), *self.targets)
