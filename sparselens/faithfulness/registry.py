"""The faithfulness checks by name (the extension point): one function from an EvalContext to a CheckResult.

Register a check with ``@register("name", default=True)``; ``evaluate(..., checks=None)`` runs every
default check, ``checks=[...]`` picks by name (an unknown name suggests the closest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

from sparselens.errors import UnknownNameError
from sparselens.faithfulness.context import CheckResult, EvalContext

CheckFn = Callable[[EvalContext], CheckResult]


@dataclass(frozen=True)
class Check:
    """A registered check: its name, function, whether ``checks=None`` runs it, and one line on what it measures."""

    name: str
    fn: CheckFn
    default: bool
    description: str


CHECKS: dict[str, Check] = {}


def register(name: str, default: bool = True, description: str = "") -> Callable[[CheckFn], CheckFn]:
    """Decorator: register ``fn`` as the check ``name``."""

    def add(fn: CheckFn) -> CheckFn:
        CHECKS[name] = Check(name, fn, default, description or (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return add


def resolve(checks: Union[str, Sequence[str], None]) -> list[Check]:
    """The checks to run, in registration order: the default set, or the named ones."""
    if checks is None:
        return [c for c in CHECKS.values() if c.default]
    if isinstance(checks, str):
        checks = [checks]
    for name in checks:
        if name not in CHECKS:
            raise UnknownNameError("faithfulness check", name, list(CHECKS))
    return [c for c in CHECKS.values() if c.name in checks]
