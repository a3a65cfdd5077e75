"""``run.time_budget_min``: the decisions to start another iteration or draw, on a fake clock."""

from __future__ import annotations

import pytest

from nemo_rence import budget as budget_module
from nemo_rence.budget import TimeBudget
from nemo_rence.config import ConfigError, RunConfig


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(budget_module.time, "perf_counter", fake)
    return fake


def _advance(clock: _Clock, context, seconds: float) -> None:
    with context():
        clock.now += seconds


def test_first_iteration_always_runs(clock):
    budget = TimeBudget(seconds=1.0, launched=0.0)
    clock.now = 100.0  # already past the budget (slow model load)
    assert not budget.exhausted()


def test_stops_when_another_iteration_plus_eval_would_overrun(clock):
    budget = TimeBudget(seconds=600.0, launched=0.0)
    clock.now = 50.0  # model load
    _advance(clock, budget.timing_eval, 40.0)  # before-eval: 40 s, now 90
    _advance(clock, budget.timing_iteration, 300.0)  # the slow first iteration: now 390
    assert budget.needed() == pytest.approx(390 + 300 + 40)
    assert budget.exhausted()  # 730 > 600 if the next were as slow
    _advance(clock, budget.timing_iteration, 60.0)  # now 450; the last one predicts the next
    assert budget.needed() == pytest.approx(450 + 60 + 40)
    assert not budget.exhausted()  # 550 <= 600
    _advance(clock, budget.timing_iteration, 60.0)  # now 510
    assert budget.exhausted()  # 610 > 600
    assert "run.time_budget_min=10 min" in budget.explain()


def test_zero_budget_means_no_limit(clock):
    budget = TimeBudget(seconds=0.0, launched=0.0)
    _advance(clock, budget.timing_iteration, 1e9)
    assert not budget.exhausted()


def test_negative_budget_is_a_config_error():
    with pytest.raises(ConfigError, match=r"run\.time_budget_min"):
        RunConfig(time_budget_min=-1)


def test_the_search_stops_before_a_draw_that_would_not_fit(clock):
    """t + last draw + rest of an iteration (outside its search) + one evaluation <= T."""
    budget = TimeBudget(seconds=600.0, launched=0.0)
    _advance(clock, budget.timing_eval, 40.0)  # now 40
    guard = budget.search_guard()  # first iteration: nothing known of its rest yet
    clock.now += 100.0  # first draw: 100 s, now 140
    assert not guard()  # 140 + 100 + 0 + 40 = 280
    clock.now += 300.0  # a slow second draw, now 440
    assert guard()  # 440 + 300 + 40 = 780 > 600
    clock.now = 400.0
    with budget.timing_iteration():
        clock.now += 150.0  # an iteration of 150 s whose search took 90: the rest is 60
        budget.record_search(90.0)
    assert budget.rest_of_iteration() == pytest.approx(60.0)
    guard = budget.search_guard()  # now 550
    clock.now += 5.0  # a 5 s draw, now 555
    assert guard()  # 555 + 5 + 60 + 40 = 660 > 600


def test_without_a_budget_the_search_never_stops(clock):
    budget = TimeBudget(seconds=0.0, launched=0.0)
    guard = budget.search_guard()
    clock.now += 1e9
    assert not guard()
