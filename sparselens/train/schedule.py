"""The L0 anneal and the sharkfin learning rate (METHOD.md section 2), as pure functions of the step.

Convention: ``step`` is the 0-based index of the optimizer step being taken, ``0 <= step < n_steps``,
and ``progress = step / n_steps``. Both schedules are computed on the host from Python numbers, so
they never synchronise with the device.

* L0 fraction: 1 until ``anneal_start``, then linear in ``progress`` down to ``l0_target`` at
  ``anneal_end``, then constant.
* Learning rate ("sharkfin"):
  ``lr * warmup(step) * (1 - step / n_steps) * sqrt(l0_target / l0(step))`` with
  ``warmup(step) = min(1, (step + 1) / max(1, ceil(warmup * n_steps)))``.

Examples:
    >>> l0_fraction(0, n_steps=100, l0_target=0.25), l0_fraction(99, n_steps=100, l0_target=0.25)
    (1.0, 0.25)
"""

from __future__ import annotations

import math


def l0_fraction(
    step: int, n_steps: int, l0_target: float, anneal_start: float = 0.01, anneal_end: float = 0.5
) -> float:
    """Nonzero fraction every sparsified matrix keeps after optimizer step ``step``."""
    progress = step / n_steps
    if progress <= anneal_start:
        return 1.0
    if progress >= anneal_end:
        return float(l0_target)
    return 1.0 + (l0_target - 1.0) * (progress - anneal_start) / (anneal_end - anneal_start)


def warmup_factor(step: int, n_steps: int, warmup: float = 0.01) -> float:
    """Linear warmup ``min(1, (step + 1) / ceil(warmup * n_steps))`` (1 when ``warmup`` is 0)."""
    warmup_steps = max(1, math.ceil(warmup * n_steps))
    return min(1.0, (step + 1) / warmup_steps)


def learning_rate(
    step: int,
    n_steps: int,
    lr: float,
    l0_target: float,
    warmup: float = 0.01,
    anneal_start: float = 0.01,
    anneal_end: float = 0.5,
) -> float:
    """The sharkfin learning rate of optimizer step ``step``."""
    l0 = l0_fraction(step, n_steps, l0_target, anneal_start, anneal_end)
    decay = 1.0 - step / n_steps
    return lr * warmup_factor(step, n_steps, warmup) * decay * math.sqrt(l0_target / l0)
