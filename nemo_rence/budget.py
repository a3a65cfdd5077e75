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

``run.budget_kind`` / ``run.budget_amount`` (:class:`SpendBudget`) is the same decision on what
the run has *spent* rather than on the clock: rollouts generated (the filter's rejected ones
included), tokens generated, optimizer steps, or minutes in the training stages. With ``s`` spent
so far, ``c`` the last iteration's cost, ``A`` the amount and ``d`` the most one draw of the
batch search can cost (``draw_bound``: a draw samples at most ``rollout.prompts_per_draw``
prompts x K rollouts, the cache included; the largest per-draw cost seen when unknown), another
draw starts only if ``s + (what the search has generated so far) + d <= A`` (tokens: its
rollouts at the last iteration's mean length; every draw counted at ``d`` where the search's
rollouts are not known, plus the rest of the last iteration outside its search), and another
iteration only if its first draw could: ``s + d + (rest) <= A``. A search the budget interrupts
ends the run as a time budget's does (its groups kept for a resumed run with a larger budget). So a run never spends more than ``A``
rollouts and stops less than one draw short of it (the filter off: one draw is one iteration,
and constant-cost iterations spend the budget exactly). Not ``s + c <= A`` on the last
iteration's whole cost ``c``, as the time budget predicts: the first iteration of a run costs
the most by far (the filter searches longest while the policy rarely solves a prompt), and that
prediction ended runs with up to 30% of their budget unspent, the most for the arms whose
iterations cost the most, which an equal-budget comparison must not do. The budget kinds with
no draw bound (optimizer steps, minutes in the training stages) keep that prediction.
What an iteration cost is read from its metrics row (:func:`iteration_cost`), so a resumed run
recounts it from ``metrics.jsonl`` and ``nemo-rence study`` counts it the same way.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = ["SpendBudget", "StopPolicy", "TimeBudget", "iteration_cost", "spent_per_iteration"]


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


def iteration_cost(kind: str, row: Mapping[str, Any], n_update: int) -> tuple[float, float]:
    """(whole cost, batch-search share) of one training iteration's metrics row, in ``kind``.

    rollouts: ``filter/rollouts`` (every rollout generated, rejected ones included); tokens:
    ``filter/rollouts * rollout/response_tokens_mean`` (the rejected groups' lengths are not
    logged: the accepted groups' mean stands for them); optimizer_steps: ``n_update`` (none in
    the search); wall_clock_min: the sum of the ``time/*`` stages / 60 (``time/rollout`` in the
    search; evaluation and checkpoints are not counted).
    """
    rollouts = float(row.get("filter/rollouts") or 0.0)
    if kind == "rollouts":
        return rollouts, rollouts
    if kind == "tokens":
        tokens = rollouts * float(row.get("rollout/response_tokens_mean") or 0.0)
        return tokens, tokens
    if kind == "optimizer_steps":
        return float(n_update), 0.0
    if kind == "wall_clock_min":
        stages = sum(float(v or 0.0) for k, v in row.items() if k.startswith("time/"))
        return stages / 60.0, float(row.get("time/rollout") or 0.0) / 60.0
    raise ValueError(f"unknown budget kind {kind!r}")


def spent_per_iteration(
    rows: Iterable[Mapping[str, Any]], kind: str, n_update: int, upto: int | None = None
) -> dict[int, float]:
    """iteration -> its cost, from ``metrics.jsonl`` rows (training rows: ``filter/rollouts``).

    The last row of an iteration counts (a resumed run may have logged one twice); iterations
    after ``upto`` (logged, but not in the checkpoint a run resumed from) are left out.
    """
    costs: dict[int, float] = {}
    for row in rows:
        it = int(row.get("iteration", 0))
        if "filter/rollouts" in row and it >= 1 and (upto is None or it <= upto):
            costs[it] = iteration_cost(kind, row, n_update)[0]
    return dict(sorted(costs.items()))


class SpendBudget:
    """``run.budget_amount`` of ``run.budget_kind`` (module doc); ``amount = 0``: no budget."""

    def __init__(self, kind: str, amount: float, n_update: int = 1, draw_rollouts: int = 0) -> None:
        self.kind, self.amount, self.n_update = kind, amount, n_update
        self.draw_rollouts = draw_rollouts
        """The most rollouts one draw of the batch search generates (0: unknown)."""
        self.spent = 0.0
        self.last_rollouts = 0.0
        self.last: tuple[float, float, int] | None = None
        """The last iteration's (cost, search share, draws)."""

    def record(self, metrics: Mapping[str, Any]) -> None:
        """Add one finished iteration's cost (its metrics row)."""
        cost, search = iteration_cost(self.kind, metrics, self.n_update)
        self.spent += cost
        self.last = (cost, search, max(int(metrics.get("filter/draws") or 1), 1))
        self.last_rollouts = float(metrics.get("filter/rollouts") or 0.0)

    def restore(self, metrics_file: Path | None, iteration: int) -> None:
        """A resumed run: recount the iterations up to the checkpoint's from ``metrics.jsonl``."""
        if self.amount <= 0 or metrics_file is None or not metrics_file.is_file():
            return
        rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        last = {int(r["iteration"]): r for r in rows if "filter/rollouts" in r}
        costs = spent_per_iteration(rows, self.kind, self.n_update, upto=iteration)
        if costs:
            self.record(last[max(costs)])  # the last iteration predicts the next
        self.spent = sum(costs.values())

    def draw_bound(self) -> float:
        """The most one draw can cost, in ``kind`` (module doc): ``draw_rollouts`` at what a
        rollout costs, else the largest per-draw cost seen (0 before the first iteration)."""
        seen = self.last[1] / self.last[2] if self.last is not None else 0.0
        per_rollout = self._per_rollout() if self.bounds_draws else None
        return seen if per_rollout is None else max(self.draw_rollouts * per_rollout, seen)

    def over(self) -> bool:
        """True when the next iteration would spend more than the amount (rank 0's view)."""
        if self.amount <= 0:
            return False
        if self.spent >= self.amount:
            return True
        if self.last is None:
            return False
        cost, search, _ = self.last
        one_draw = self.spent + self.draw_bound() + (cost - search) > self.amount
        if self.bounds_draws:  # the search guard ends a search that would overspend
            return one_draw
        return self.spent + cost > self.amount or one_draw

    @property
    def bounds_draws(self) -> bool:
        """Whether a draw's cost is bounded (rollouts, tokens) so that an iteration may start
        whenever one draw fits (module doc)."""
        return self.draw_rollouts > 0 and self.kind in ("rollouts", "tokens")

    def exhausted(self) -> bool:
        """Rank 0's verdict on every rank (only rank 0 recounts a resumed run's history)."""
        from nemo_rence.infra.distributed import broadcast_object

        return broadcast_object(self.over()) if self.amount > 0 else False

    def search_guard(self, searched: Callable[[], float] | None = None) -> Callable[[], bool]:
        """``should_stop`` for one batch search: True when another draw would overspend.

        Args:
            searched: the rollouts the search has generated so far (the filter's
                ``search_rollouts``). With it, a rollout or token budget counts the draws done
                at what they cost and only the next one at its bound, so the run stops less than
                one draw short of the budget, and the first iteration is guarded too (rollouts);
                without it every draw counts at its bound.
        """
        draws = [0]

        def should_stop() -> bool:
            draws[0] += 1  # asked before every draw but the first: draws[0] have run
            if self.amount <= 0:
                return False
            if searched is not None and self.bounds_draws:
                per_rollout = self._per_rollout()
                if per_rollout is not None:
                    return self.spent + searched() * per_rollout + self.draw_bound() > self.amount
            if self.last is None:
                return False
            cost, search, _ = self.last
            rest = cost - search
            return self.spent + (draws[0] + 1) * self.draw_bound() + rest > self.amount

        return should_stop

    def _per_rollout(self) -> float | None:
        """What one rollout costs in ``kind``: 1, or the last iteration's mean tokens per
        rollout (None before the first iteration: not yet known)."""
        if self.kind == "rollouts":
            return 1.0
        if self.last is None or self.last_rollouts <= 0:
            return None
        return self.last[1] / self.last_rollouts

    def explain(self) -> str:
        spent = f"{self.spent:g} of run.budget_amount={self.amount:g} {self.kind} spent"
        if self.last is None:
            return spent
        if self.bounds_draws:
            return f"{spent}; a draw may cost {self.draw_bound():g}: not one more draw fits"
        return f"{spent}; the last iteration spent {self.last[0]:g}: another would exceed it"


class SignalFlag(Protocol):
    """What a signal handler leaves behind (:class:`nemo_rence.signals.StopFlag`)."""

    signal: int | None
    """The signal that asked to stop, or None."""

    @property
    def exit_code(self) -> int:
        """The exit code the signal asks for (0, or 130 after Ctrl-C)."""
        ...


class StopPolicy:
    """The run's one answer to "stop now?": a signal arrived, or the time or spend budget is spent.

    ``before_iteration()`` is asked before each iteration (rank 0's budget verdict on every
    rank); ``search_guard()`` is the ``should_stop`` of a batch search (a signal, or another
    draw would not fit a budget). ``label`` names the budget that stopped the run.
    """

    def __init__(
        self, budget: TimeBudget, flag: SignalFlag | None = None, spend: SpendBudget | None = None
    ) -> None:
        self.budget = budget
        self.flag = flag
        self.spend = spend if spend is not None else SpendBudget("rollouts", 0.0)
        self.label = "time budget"

    @property
    def signal(self) -> int | None:
        return self.flag.signal if self.flag is not None else None

    @property
    def exit_code(self) -> int:
        return self.flag.exit_code if self.flag is not None else 0

    def search_guard(self, searched: Callable[[], float] | None = None) -> Callable[[], bool]:
        """``searched``: the rollouts the search has generated so far (``SpendBudget``)."""
        guard, spend = self.budget.search_guard(), self.spend.search_guard(searched)

        def should_stop() -> bool:
            if self.signal is not None or guard():
                return True
            if spend():
                self.label = "budget"
                return True
            return False

        return should_stop

    def record(self, metrics: Mapping[str, Any]) -> None:
        """A finished iteration's metrics: what it spent."""
        self.spend.record(metrics)

    def before_iteration(self) -> str | None:
        """Why the next iteration must not start (the budget's explanation), or None."""
        if self.budget.exhausted():
            self.label = "time budget"
            return self.budget.explain()
        if self.spend.exhausted():
            self.label = "budget"
            return self.spend.explain()
        return None
