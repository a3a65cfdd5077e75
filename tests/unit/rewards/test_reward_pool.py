"""The process-pool grader: order, counters, hard time limit, crash recovery, config checks."""

from __future__ import annotations

import os
import signal
import time

import pytest

from nemo_rence.rewards.math import score
from nemo_rence.rewards.pool import GraderConfig, GraderPool


def _wait_ready(pool: GraderPool, timeout: float = 60.0) -> None:
    """Grade a trivial batch until every worker has answered once (all started)."""
    deadline = time.monotonic() + timeout
    while not all(w.ready for w in pool._workers):
        pool.score_batch([r"\boxed{1}"] * 4, ["1"] * 4)
        assert time.monotonic() < deadline, "workers did not start"


def test_batch_results_match_in_process_scores_in_order(pool):
    responses = [r"\boxed{4}", "no box", r"\boxed{\frac{1}{2}}", r"\boxed{3}", r"\boxed{x^2+2x}"]
    golds = ["4", "4", "0.5", "4", "2x+x^2"]
    results = pool.score_batch(responses, golds)
    expected = [score(r, g) for r, g in zip(responses, golds, strict=True)]
    assert [r.reward for r in results] == [e.reward for e in expected] == [1.0, 0.0, 1.0, 0.1, 1.0]
    assert [r.extracted for r in results] == [e.extracted for e in expected]


def test_empty_batch_and_length_mismatch(pool):
    assert pool.score_batch([], []) == []
    with pytest.raises(ValueError, match="same length"):
        pool.score_batch(["a"], [])


def test_counters_count_truncation_and_sympy_fallbacks():
    with GraderPool(num_workers=1, timeout_s=5.0, max_chars=100) as p:
        results = p.score_batch(["y" * 1000 + r"\boxed{2}", r"\boxed{x+x}"], ["2", "2x"])
        assert [r.correct for r in results] == [True, True]
        assert results[0].truncated and not results[1].truncated
        assert p.counters["rewards/truncated"] == 1
        assert p.counters["rewards/sympy_fallbacks"] == 1
        assert p.counters["rewards/items"] == 2
        assert p.metrics()["rewards/items"] == 2.0


def test_unresponsive_worker_is_killed_and_its_item_times_out():
    # SIGSTOP freezes a worker exactly like a C-level sympy loop would: no signal handler runs.
    with GraderPool(num_workers=2, timeout_s=1.0, chunk_size=2) as p:
        _wait_ready(p)
        frozen = p._workers[0].proc.pid
        os.kill(frozen, signal.SIGSTOP)
        start = time.monotonic()
        results = p.score_batch([rf"\boxed{{{i}}}" for i in range(4)], [str(i) for i in range(4)])
        elapsed = time.monotonic() - start
        timed_out = [r for r in results if r.timed_out]
        assert len(timed_out) == 1
        assert timed_out[0].reward == 0.0 and timed_out[0].method == "timeout"
        assert sum(r.correct for r in results) == 3  # the frozen worker's other item was re-queued
        assert elapsed < 1.0 + 3.0
        assert p.counters["rewards/timeouts"] == 1
        assert p.counters["rewards/worker_restarts"] == 1
        assert all(w.proc.pid != frozen for w in p._workers)
        # the replacement worker grades normally
        assert [r.reward for r in p.score_batch([r"\boxed{5}"] * 4, ["5"] * 4)] == [1.0] * 4


def test_dead_worker_is_replaced_and_no_item_is_lost():
    with GraderPool(num_workers=2, timeout_s=2.0) as p:
        _wait_ready(p)
        os.kill(p._workers[1].proc.pid, signal.SIGKILL)
        p._workers[1].proc.join(5)
        results = p.score_batch([rf"\boxed{{{i}}}" for i in range(6)], [str(i) for i in range(6)])
        assert [r.correct for r in results] == [True] * 6
        assert p.counters["rewards/worker_restarts"] >= 1


def test_slow_symbolic_item_hits_the_soft_limit_without_losing_the_worker():
    # A 200-factor product takes sympy ~0.4 s of interruptible Python; the soft limit is 50 ms.
    slow = r"\boxed{\prod_{k=1}^{200} (x+k)}"
    with GraderPool(num_workers=1, timeout_s=0.2, soft_fraction=0.25) as p:
        _wait_ready(p)
        pid = p._workers[0].proc.pid
        results = p.score_batch([slow, r"\boxed{2}"], ["(x+1)^{200}", "2"])
        assert results[0].timed_out and results[0].reward == 0.0
        assert results[1].correct
        assert p._workers[0].proc.pid == pid  # interrupted in-process, not killed
        assert p.counters["rewards/worker_restarts"] == 0


def test_spawn_context_works_too():
    with GraderPool(num_workers=1, timeout_s=5.0, context="spawn") as p:
        assert p.score_batch([r"\boxed{1/2}"], ["0.5"])[0].correct


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_workers": 0}, "num_workers"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"soft_fraction": 1.5}, "soft_fraction"),
        ({"max_chars": 0}, "max_chars"),
        ({"mode": "ternary"}, "mode"),
        ({"context": "fork"}, "context"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"memory_limit_mb": 10}, "memory_limit_mb"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GraderConfig(**kwargs)


def test_config_and_keywords_are_exclusive():
    with pytest.raises(TypeError):
        GraderPool(config=GraderConfig(), context="spawn")
