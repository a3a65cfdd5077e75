"""``run.time_budget_min``: the decision to start another iteration, on a fake clock."""

from __future__ import annotations

import pytest

from nemo_rence import train
from nemo_rence.config import ConfigError, RunConfig


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(train.time, "perf_counter", fake)
    return fake


def _advance(clock: _Clock, context, seconds: float) -> None:
    with context():
        clock.now += seconds


def test_first_iteration_always_runs(clock):
    budget = train._Budget(seconds=1.0, launched=0.0)
    clock.now = 100.0  # already past the budget (slow model load)
    assert not budget.exhausted()


def test_stops_when_another_iteration_plus_eval_would_overrun(clock):
    budget = train._Budget(seconds=600.0, launched=0.0)
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
    budget = train._Budget(seconds=0.0, launched=0.0)
    _advance(clock, budget.timing_iteration, 1e9)
    assert not budget.exhausted()


def test_negative_budget_is_a_config_error():
    with pytest.raises(ConfigError, match=r"run\.time_budget_min"):
        RunConfig(time_budget_min=-1)
