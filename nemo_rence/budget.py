"""``run.time_budget_min``: when a run stops so that it ends within its wall-clock budget.

Two decisions, both predictions from what was just measured (seconds since launch ``t``, the
budget ``T``, the last evaluation's time ``e``):

* **another iteration** starts only if ``t + (last whole iteration) + e <= T``: the last one, not
  the slowest, because the first iteration of a run is the slowest by far (the filter searches
  longest while the policy rarely solves a prompt) and does not predict the next ones. The first
  iteration always starts.
* **another draw of the batch search** (Algorithm 1's oversampling loop, which has no bound in
  time) starts only if ``t + (last draw) + (rest of an iteration) + e <= T``, the rest being the
  last iteration's time outside its search (update, refit, periodic evaluation, checkpoint; 0
  before the first iteration). Otherwise the search is interrupted; the filter keeps its groups,
  the run checkpoints them and evaluates, and a resumed run continues the same search
  (:class:`nemo_rence.algorithm.filter.SearchInterrupted`).

The first draw of each search always runs, so resumed runs always make progress.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Protocol

__all__ = ["StopPolicy", "TimeBudget"]


class TimeBudget:
    """The clock of one process; ``seconds = 0`` means no budget."""

    def __init__(self, seconds: float, launched: float) -> None:
        self.seconds = seconds
        self.launched = launched
        self.iteration_s: list[float] = []
        self.search_s: list[float] = []
        self.eval_s = 0.0

    @contextlib.contextmanager
    def timing_eval(self) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.eval_s = time.perf_counter() - start

    @contextlib.contextmanager
    def timing_iteration(self) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.iteration_s.append(time.perf_counter() - start)

    def record_search(self, seconds: float) -> None:
        """The batch search's share of the iteration being timed (its ``time/rollout``)."""
        self.search_s.append(seconds)

    def elapsed(self) -> float:
        return time.perf_counter() - self.launched

    def needed(self) -> float:
        """When the run would end after one more iteration like the last and an evaluation."""
        return self.elapsed() + self.iteration_s[-1] + self.eval_s

    def exhausted(self) -> bool:
        """Rank 0's verdict on every rank (their clocks differ; they must stop together)."""
        from nemo_rence.infra.distributed import broadcast_object

        over = self.seconds > 0 and bool(self.iteration_s) and self.needed() > self.seconds
        return broadcast_object(over) if self.seconds > 0 else False

    def rest_of_iteration(self) -> float:
        """The last iteration's time outside its batch search (0 before the first)."""
        if not self.iteration_s or len(self.search_s) < len(self.iteration_s):
            return 0.0
        return max(self.iteration_s[-1] - self.search_s[-1], 0.0)

    def search_guard(self) -> Callable[[], bool]:
        """``should_stop`` for one batch search (rank 0): True when another draw would not fit.

        Each call measures the draw since the previous call (the first: since this guard was
        made, i.e. the search's first draw).
        """
        last = [time.perf_counter()]

        def should_stop() -> bool:
            now = time.perf_counter()
            draw_s, last[0] = now - last[0], now
            if self.seconds <= 0:
                return False
            return self.elapsed() + draw_s + self.rest_of_iteration() + self.eval_s > self.seconds

        return should_stop

    def explain(self) -> str:
        return (
            f"stopping after {len(self.iteration_s)} iterations: another iteration "
            f"(~{self.iteration_s[-1]:.0f} s) and the final evaluation ({self.eval_s:.0f} s) "
            f"would end at {self.needed():.0f} s > run.time_budget_min={self.seconds / 60:g} min"
        )


class SignalFlag(Protocol):
    """What a signal handler leaves behind: the number of the signal that asked to stop."""

    signal: int | None


class StopPolicy:
    """The run's one answer to "stop now?": a signal arrived, or the time budget is spent.

    ``before_iteration()`` is asked before each iteration (rank 0's budget verdict on every
    rank); ``search_guard()`` is the ``should_stop`` of a batch search (a signal, or another
    draw would not fit the budget).
    """

    def __init__(self, budget: TimeBudget, flag: SignalFlag | None = None) -> None:
        self.budget = budget
        self.flag = flag

    @property
    def signal(self) -> int | None:
        return self.flag.signal if self.flag is not None else None

    def search_guard(self) -> Callable[[], bool]:
        guard = self.budget.search_guard()
        return lambda: self.signal is not None or guard()

    def before_iteration(self) -> str | None:
        """Why the next iteration must not start (the budget's explanation), or None."""
        return self.budget.explain() if self.budget.exhausted() else None
