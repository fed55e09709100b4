"""Tasks: pairs of prompts that differ minimally, and the losses that pruning minimises.

The twenty Python tasks of the weight-sparse circuits paper (:mod:`sparselens.tasks.python_tasks`)
and the critique's natural-language tasks (:mod:`sparselens.tasks.language`) are registered by
name. A batch holds ``n`` pairs as ``2n`` rows (A rows, then B rows); the paired binary loss is
AVERAGED over the two prompts of a pair (the paper's stored numbers are sums, twice ours).

Examples:
    >>> from sparselens.data import load_tokenizer
    >>> from sparselens.tasks import get_task, list_tasks
    >>> task = get_task("single_double_quote", tokenizer=load_tokenizer())
    >>> batch = task.batch(n=64, split="test")      # batch.tokens [128, pos], batch.read_pos [128]
    >>> loss = task.loss(model, batch)              # scalar: mean over pairs of (loss_A + loss_B) / 2
    >>> per_pair = task.loss_from_logits(logits, batch, kind="ce", reduction="none")   # [64]

Define a task from templates in a few lines (see docs/tasks.md):

    >>> from sparselens.tasks import TemplateTask, register_task
    >>> def set_or_list(tokenizer=None):             # each target one token of the shipped Python tokenizer
    ...     return TemplateTask(
    ...         "set_or_list", ["{name} = {empty}\nfor {item} in items:\n    {name}."], targets=("add", "append"),
    ...         a={"empty": ["set()"]}, b={"empty": ["[]", "list()"]},
    ...         shared={"name": ["seen", "found", "out"], "item": ["x", "row", "key"]}, tokenizer=tokenizer)
    >>> register_task("set_or_list", set_or_list)
    >>> get_task("set_or_list", tokenizer=model.tokenizer).batch(8)
"""

from __future__ import annotations

from typing import Any, Callable

from sparselens.errors import UnknownNameError
from sparselens.tasks.base import PromptPair, Task, TaskBatch, per_prompt_loss, prompt_split
from sparselens.tasks.language import LANGUAGE_TASKS
from sparselens.tasks.python_tasks import PYTHON_TASKS
from sparselens.tasks.templates import TemplateTask

_REGISTRY: dict[str, Callable[[Any], Task]] = {**PYTHON_TASKS, **LANGUAGE_TASKS}


def register_task(name: str, factory: Callable[[Any], Task], overwrite: bool = False) -> None:
    """Make ``get_task(name, tokenizer=...)`` call ``factory(tokenizer)``.

    Raises:
        ValueError: ``name`` is taken and ``overwrite`` is False.
    """
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a task named {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = factory


def list_tasks(kind: str = "all") -> list[str]:
    """Registered task names: ``kind`` is ``"all"``, ``"python"`` (the paper's 20) or ``"language"``."""
    if kind == "python":
        return list(PYTHON_TASKS)
    if kind == "language":
        return list(LANGUAGE_TASKS)
    if kind != "all":
        raise ValueError(f"kind must be 'all', 'python' or 'language', got {kind!r}")
    return list(_REGISTRY)


def get_task(name: str, tokenizer: Any = None) -> Task:
    """Build a registered task for ``tokenizer`` (default: the shipped Python tokenizer).

    Raises:
        UnknownNameError: no task of that name (the message suggests the closest).
        ValueError: a target is not a single token for ``tokenizer``.
    """
    if name not in _REGISTRY:
        raise UnknownNameError("task", name, list(_REGISTRY))
    if tokenizer is None:
        from sparselens.data import load_tokenizer

        tokenizer = load_tokenizer()
    return _REGISTRY[name](tokenizer)


__all__ = [
    "PromptPair",
    "Task",
    "TaskBatch",
    "TemplateTask",
    "get_task",
    "list_tasks",
    "per_prompt_loss",
    "prompt_split",
    "register_task",
]
