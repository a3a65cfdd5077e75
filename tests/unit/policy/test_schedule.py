"""Learning-rate schedules: hand-computed values of the formulas in ``policy.schedule``."""

from __future__ import annotations

import math

import pytest

from nemo_rence.policy.schedule import LRSchedule


def test_constant_is_the_paper_rate_everywhere():
    s = LRSchedule(lr=1e-6, total_steps=800)
    assert {s.lr_at(i) for i in (0, 1, 400, 799, 5000)} == {1e-6}


def test_linear_warmup_then_decay_to_the_floor():
    s = LRSchedule(lr=1.0, total_steps=6, kind="linear", warmup_steps=2, min_lr_ratio=0.2)
    # warm-up 1/2, 2/2; then t = 0, 1/3, 2/3, 1 over the remaining 4 steps
    expect = [0.5, 1.0, 1.0, 1 - 0.8 / 3, 1 - 1.6 / 3, 0.2]
    assert [s.lr_at(i) for i in range(6)] == pytest.approx(expect)
    assert s.lr_at(100) == pytest.approx(0.2)  # past the end: the last value


def test_cosine_goes_from_the_peak_to_the_floor():
    s = LRSchedule(lr=2.0, total_steps=5, kind="cosine", min_lr_ratio=0.1)
    got = [s.lr_at(i) for i in range(5)]
    want = [2.0 * (0.1 + 0.9 * (1 + math.cos(math.pi * i / 4)) / 2) for i in range(5)]
    assert got == pytest.approx(want)
    assert got[0] == pytest.approx(2.0) and got[-1] == pytest.approx(0.2)
    assert got[2] == pytest.approx(2.0 * 0.55)


def test_a_single_step_run_uses_the_peak():
    assert LRSchedule(lr=3.0, total_steps=1, kind="cosine").lr_at(0) == 3.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "step"}, r"lr_schedule must be one of \['constant', 'linear', 'cosine'\]"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio must be in"),
        ({"warmup_steps": -1}, "warmup_steps >= 0"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRSchedule(lr=1.0, total_steps=10, **kwargs)


def test_a_given_fraction_replaces_the_step_count_after_warm_up():
    s = LRSchedule(lr=2.0, total_steps=100, kind="cosine", min_lr_ratio=0.1, warmup_steps=2)
    assert s.lr_at(0, 0.9) == 1.0  # warm-up still counts steps
    assert s.lr_at(5, 0.0) == 2.0
    assert math.isclose(s.lr_at(5, 0.5), 2.0 * (0.1 + 0.9 * 0.5))
    assert math.isclose(s.lr_at(5, 1.0), 0.2) and s.lr_at(5, 7.0) == s.lr_at(5, 1.0)
    assert LRSchedule(lr=2.0, total_steps=3).lr_at(2, 0.7) == 2.0  # constant stays constant
