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


def test_stops_when_slowest_iteration_plus_eval_would_overrun(clock):
    budget = train._Budget(seconds=600.0, launched=0.0)
    clock.now = 50.0  # model load
    _advance(clock, budget.timing_eval, 40.0)  # before-eval: 40 s, now 90
    _advance(clock, budget.timing_iteration, 200.0)  # now 290
    assert budget.needed() == pytest.approx(290 + 200 + 40)
    assert not budget.exhausted()  # 530 <= 600
    _advance(clock, budget.timing_iteration, 100.0)  # now 390; slowest stays 200
    assert budget.needed() == pytest.approx(390 + 200 + 40)
    assert budget.exhausted()  # 630 > 600
    assert "run.time_budget_min=10 min" in budget.explain()


def test_zero_budget_means_no_limit(clock):
    budget = train._Budget(seconds=0.0, launched=0.0)
    _advance(clock, budget.timing_iteration, 1e9)
    assert not budget.exhausted()


def test_negative_budget_is_a_config_error():
    with pytest.raises(ConfigError, match=r"run\.time_budget_min"):
        RunConfig(time_budget_min=-1)
