"""Learning-rate schedules over the optimizer steps of a run.

With peak rate ``lr``, warm-up ``W`` steps, ``T`` steps in all (``run.iterations * n_update``),
floor ratio ``m`` (``min_lr_ratio``) and step ``s = 0 .. T-1``::

    warm-up (s < W):   lr_s = lr * (s + 1) / W
    then, with t = (s - W) / max(T - W - 1, 1) in [0, 1]:
      constant:        lr_s = lr                                   (the ReNCE paper, Sec. 5)
      linear:          lr_s = lr * (1 - (1 - m) * t)
      cosine:          lr_s = lr * (m + (1 - m) * (1 + cos(pi * t)) / 2)

so the last step runs at ``m * lr`` for ``linear`` and ``cosine``. A function of the global
step only: a resumed run continues the same curve.

A run that ends on a spend budget (``run.budget_kind``/``run.budget_amount``) decays over that
budget instead: the trainer passes ``t`` = the share of the budget spent when the step runs
(``lr_at(s, t)``), so arms of a study that stop after different numbers of iterations at the same
budget each go through the whole curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LR_SCHEDULES", "LRSchedule"]

LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    """``lr_at(step)`` of the module docstring."""

    lr: float
    total_steps: int
    kind: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.kind!r}")
        if self.lr <= 0 or self.total_steps < 1 or self.warmup_steps < 0:
            raise ValueError("need lr > 0, total_steps >= 1 and warmup_steps >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def lr_at(self, step: int, fraction: float | None = None) -> float:
        """The learning rate of optimizer step ``step`` (0-based; steps past the end keep the
        last value); ``fraction``: the decay's ``t`` given directly (a budget's share spent)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.lr
        if fraction is None:
            span = max(self.total_steps - self.warmup_steps - 1, 1)
            fraction = (step - self.warmup_steps) / span
        t = min(max(fraction, 0.0), 1.0)
        m = self.min_lr_ratio
        if self.kind == "linear":
            return self.lr * (1.0 - (1.0 - m) * t)
        return self.lr * (m + (1.0 - m) * (1.0 + math.cos(math.pi * t)) / 2.0)
