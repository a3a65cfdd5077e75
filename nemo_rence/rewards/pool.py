"""Batch grading in worker processes with a hard per-item time limit.

Why a process pool: math-verify (sympy underneath) can run for minutes or exhaust memory on a
hostile answer, its own timeouts use ``signal.alarm``, which only works in the main thread of a
process (in a trainer's thread or a Ray worker thread they are silently disabled or raise), and a
C-level big-integer power cannot be interrupted by any signal handler. The only limit that always
holds is killing the process. So:

1. The parent truncates each response to ``max_chars`` (keeping the tail) and sends items to
   ``num_workers`` worker processes in small chunks over pipes. It never parses anything itself.
2. Each worker grades items one at a time with :func:`nemo_rence.rewards.math.score` in its main
   thread, under a soft limit (``soft_fraction * timeout_s``, an ``ITIMER_REAL`` signal in the
   worker's own main thread) that turns most runaway parses into a ``timed_out`` result without
   losing the worker, and under an address-space limit (``memory_limit_mb``).
3. The parent waits on the pipes with a deadline. A worker whose current item exceeds
   ``timeout_s`` is killed (SIGKILL) and replaced; that item scores 0 with ``timed_out=True``;
   the rest of its chunk is re-queued. A worker that dies (crash, OOM) is replaced the same way
   and its item scores 0 with ``error`` set.

Workers (and the fork server) die with the process that owns the pool, even under SIGKILL
(:func:`nemo_rence.rewards._worker.die_with_parent`); the multiprocessing resource tracker then
sees its last writer gone and exits too.

Workers start with the ``forkserver`` context by default (fork from a clean server process that
has math-verify preloaded, so replacing a killed worker takes milliseconds and no CUDA or thread
state of a torch/megatron parent is inherited), or ``spawn``.

Example::

    with GraderPool(num_workers=2, timeout_s=5.0) as pool:
        results = pool.score_batch([r"... \\boxed{4}", "no box"], ["4", "4"])
        [r.reward for r in results]          # [1.0, 0.0]
        pool.counters["rewards/timeouts"]    # 0
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nemo_rence.rewards._worker import OWNER_ENV
from nemo_rence.rewards.math import (
    DEFAULT_MAX_CHARS,
    REWARD_MODES,
    RewardResult,
    coerce_text,
    failed_result,
    truncate_tail,
)

CONTEXTS = ("forkserver", "spawn")
COUNTER_NAMES = (
    "rewards/items",
    "rewards/timeouts",
    "rewards/truncated",
    "rewards/worker_restarts",
    "rewards/errors",
    "rewards/sympy_fallbacks",
)


@dataclass
class GraderConfig:
    """Settings of the batch grader (:class:`GraderPool`).

    Attributes:
        num_workers: worker processes grading in parallel (>= 1).
        timeout_s: hard limit per item in seconds; past it the worker is killed and the item
            scores 0 with ``timed_out=True``.
        soft_fraction: fraction of ``timeout_s`` after which the worker interrupts the item
            itself (no kill needed when the runaway code is interruptible); in (0, 1].
        max_chars: responses longer than this are truncated to their last ``max_chars``
            characters before grading (counted in ``rewards/truncated``).
        mode: reward values, "paper" (1 / 0.1 / 0) or "binary" (1 / 0).
        use_sympy: allow the math-verify fallback (False: fast path only).
        context: multiprocessing start method, "forkserver" or "spawn".
        chunk_size: items sent to a worker at once (amortises pipe round trips).
        memory_limit_mb: address-space limit of each worker in MiB (None: no limit).
        start_timeout_s: a worker not ready this many seconds after start is replaced; three
            failed starts in a row raise ``RuntimeError``.
    """

    num_workers: int = 2
    timeout_s: float = 5.0
    soft_fraction: float = 0.8
    max_chars: int = DEFAULT_MAX_CHARS
    mode: str = "paper"
    use_sympy: bool = True
    context: str = "forkserver"
    chunk_size: int = 8
    memory_limit_mb: int | None = 4096
    start_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise ValueError(f"num_workers must be an integer >= 1, got {self.num_workers!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {self.timeout_s!r}")
        if not 0 < self.soft_fraction <= 1:
            raise ValueError(f"soft_fraction must be in (0, 1], got {self.soft_fraction!r}")
        if not isinstance(self.max_chars, int) or self.max_chars < 1:
            raise ValueError(f"max_chars must be an integer >= 1, got {self.max_chars!r}")
        if self.mode not in REWARD_MODES:
            raise ValueError(f"mode must be one of {REWARD_MODES}, got {self.mode!r}")
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {self.chunk_size!r}")
        if self.memory_limit_mb is not None and self.memory_limit_mb < 256:
            raise ValueError(
                f"memory_limit_mb must be None or >= 256 (MiB), got {self.memory_limit_mb!r}"
            )
        if not self.start_timeout_s > 0:
            raise ValueError(f"start_timeout_s must be > 0, got {self.start_timeout_s!r}")


@dataclass
class _Worker:
    """Parent-side handle of one worker process."""

    proc: Any
    conn: Any
    started_at: float
    ready: bool = False
    assigned: collections.deque[int] = field(default_factory=collections.deque)
    item_started: float = 0.0


class GraderPool:
    """A pool of grading processes with a hard per-item time limit (see the module docstring).

    Args:
        num_workers, timeout_s, max_chars, ...: the fields of :class:`GraderConfig`, or
        config: a ready :class:`GraderConfig` (then no other argument may be given).

    Counters (cumulative over the pool's life, in :attr:`counters`): ``rewards/items``,
    ``rewards/timeouts``, ``rewards/truncated``, ``rewards/worker_restarts``, ``rewards/errors``,
    ``rewards/sympy_fallbacks``.
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 5.0,
        max_chars: int = DEFAULT_MAX_CHARS,
        *,
        config: GraderConfig | None = None,
        **kwargs: Any,
    ) -> None:
        if config is None:
            config = GraderConfig(
                num_workers=num_workers, timeout_s=timeout_s, max_chars=max_chars, **kwargs
            )
        elif kwargs:
            raise TypeError("pass either config= or keyword settings, not both")
        self.config = config
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._workers: list[_Worker] = []
        self._ctx: Any = None
        self._failed_starts = 0
        self._lock = threading.RLock()  # one batch at a time; safe to call from any thread

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> GraderPool:
        """Start the workers (idempotent). Called by ``__enter__`` and the first batch."""
        if self._workers:
            return self
        self._ctx = mp.get_context(self.config.context)
        os.environ[OWNER_ENV] = str(os.getpid())  # read by the fork server's preload
        if self.config.context == "forkserver":
            # Only effective if this process has not started its fork server yet.
            self._ctx.set_forkserver_preload(["nemo_rence.rewards._preload"])
        self._workers = [self._spawn() for _ in range(self.config.num_workers)]
        return self

    def _spawn(self) -> _Worker:
        from nemo_rence.rewards._worker import worker_main

        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        settings = {
            "mode": self.config.mode,
            "use_sympy": self.config.use_sympy,
            "soft_timeout_s": self.config.timeout_s * self.config.soft_fraction,
            "memory_limit_mb": self.config.memory_limit_mb,
            # responses arrive truncated already; the worker's own limit is a second guard
            "max_chars": self.config.max_chars,
            "owner_pid": os.getpid(),  # the worker dies with this process (die_with_parent)
        }
        proc = self._ctx.Process(
            target=worker_main, args=(child_conn, settings), daemon=True, name="nemo-rence-grader"
        )
        proc.start()
        child_conn.close()
        return _Worker(proc=proc, conn=parent_conn, started_at=time.monotonic())

    def _kill(self, worker: _Worker) -> None:
        try:
            worker.proc.kill()
            worker.proc.join(timeout=5)
        except Exception:  # already gone
            pass
        with contextlib.suppress(Exception):
            worker.conn.close()

    def _replace(self, index: int) -> None:
        self._kill(self._workers[index])
        self.counters["rewards/worker_restarts"] += 1
        self._workers[index] = self._spawn()

    def close(self) -> None:
        """Stop all workers (politely, then by force)."""
        for w in self._workers:
            with contextlib.suppress(Exception):
                w.conn.send(None)
        deadline = time.monotonic() + 2.0
        for w in self._workers:
            w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                self._kill(w)
            else:
                w.conn.close()
        self._workers = []

    def __enter__(self) -> GraderPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; prefer close() or a with-block
        try:
            if self._workers:
                self.close()
        except Exception:
            pass

    # ---------------------------------------------------------------- grading

    def metrics(self) -> dict[str, float]:
        """The counters as floats, ready for a metrics logger."""
        return {k: float(v) for k, v in self.counters.items()}

    def score_batch(self, responses: Sequence[Any], golds: Sequence[Any]) -> list[RewardResult]:
        """Grade ``responses[i]`` against ``golds[i]``; one :class:`RewardResult` per item.

        Never raises because of a response and never waits longer than ``timeout_s`` (plus
        pipe latency) on any single item. Results keep the input order. Safe to call from any
        thread (no signals are used in this process); concurrent calls run one after another.
        """
        with self._lock:
            return self._score_batch(responses, golds)

    def _score_batch(self, responses: Sequence[Any], golds: Sequence[Any]) -> list[RewardResult]:
        if len(responses) != len(golds):
            raise ValueError(
                f"responses and golds must have the same length, got {len(responses)} and "
                f"{len(golds)}"
            )
        n = len(responses)
        if n == 0:
            return []
        self.start()
        items: list[tuple[str, str]] = []
        truncated = [False] * n
        for i in range(n):
            text, truncated[i] = truncate_tail(coerce_text(responses[i]), self.config.max_chars)
            items.append((text, coerce_text(golds[i])))
        results: list[RewardResult | None] = [None] * n
        pending: collections.deque[int] = collections.deque(range(n))
        remaining = n
        timeout = self.config.timeout_s
        while remaining:
            self._dispatch(pending, items)
            conns = {w.conn: k for k, w in enumerate(self._workers)}
            ready = mpc.wait(list(conns), timeout=self._wait_time())
            now = time.monotonic()
            for conn in ready:
                k = conns[conn]
                w = self._workers[k]
                try:
                    msg: Any = w.conn.recv()
                except (EOFError, OSError):
                    if not w.ready:
                        self._count_failed_start()
                    remaining -= self._on_worker_death(k, pending, results, truncated, now)
                    continue
                if msg[0] == "ready":
                    w.ready = True
                    self._failed_starts = 0
                elif msg[0] == "result":
                    _, idx, res = msg
                    if w.assigned and w.assigned[0] == idx:
                        w.assigned.popleft()
                    w.item_started = now
                    if results[idx] is None:
                        results[idx] = replace(res, truncated=True) if truncated[idx] else res
                        remaining -= 1
            for k, w in enumerate(self._workers):
                if w.assigned and now - w.item_started > timeout:
                    idx = w.assigned.popleft()
                    results[idx] = failed_result(
                        timed_out=True, truncated=truncated[idx], elapsed_s=now - w.item_started
                    )
                    remaining -= 1
                    pending.extendleft(reversed(w.assigned))
                    w.assigned.clear()
                    self._replace(k)
                elif not w.ready and now - w.started_at > self.config.start_timeout_s:
                    self._count_failed_start()
                    self._replace(k)
        final = [r for r in results if r is not None]
        self._count(final, truncated)
        return final

    def _count_failed_start(self) -> None:
        """Count a worker that died or hung before it was ready; give up after too many."""
        self._failed_starts += 1
        if self._failed_starts >= 3 * self.config.num_workers:
            self.close()
            raise RuntimeError(
                f"grader workers failed to start {self._failed_starts} times in a row (died, or "
                f"not ready within start_timeout_s={self.config.start_timeout_s} s); a script "
                "that starts a GraderPool needs an `if __name__ == '__main__':` guard"
            )

    def _dispatch(self, pending: collections.deque[int], items: list[tuple[str, str]]) -> None:
        """Send chunks of pending items to ready, idle workers."""
        idle = [w for w in self._workers if w.ready and not w.assigned]
        if not idle or not pending:
            return
        share = -(-len(pending) // max(1, len([w for w in self._workers if w.ready])))
        size = max(1, min(self.config.chunk_size, share))
        for w in idle:
            if not pending:
                break
            chunk = [pending.popleft() for _ in range(min(size, len(pending)))]
            try:
                w.conn.send(("batch", [(i, *items[i]) for i in chunk]))
            except (OSError, ValueError):
                pending.extendleft(reversed(chunk))  # the death is handled on the next wait
                continue
            w.assigned.extend(chunk)
            w.item_started = time.monotonic()

    def _wait_time(self) -> float:
        """Seconds until the next item or start deadline (bounded to keep the loop live)."""
        now = time.monotonic()
        deadlines = [1.0]
        for w in self._workers:
            if w.assigned:
                deadlines.append(w.item_started + self.config.timeout_s - now)
            elif not w.ready:
                deadlines.append(w.started_at + self.config.start_timeout_s - now)
        return max(0.0, min(deadlines)) + 0.001

    def _on_worker_death(
        self,
        k: int,
        pending: collections.deque[int],
        results: list[RewardResult | None],
        truncated: list[bool],
        now: float,
    ) -> int:
        """Replace a dead worker; its current item fails. Returns the number of items closed."""
        w = self._workers[k]
        closed = 0
        if w.assigned:
            idx = w.assigned.popleft()
            code = w.proc.exitcode
            results[idx] = failed_result(
                timed_out=False,
                error=f"grader worker died (exit code {code})",
                truncated=truncated[idx],
                elapsed_s=now - w.item_started,
            )
            closed = 1
            pending.extendleft(reversed(w.assigned))
            w.assigned.clear()
        self._replace(k)
        return closed

    def _count(self, results: list[RewardResult], truncated: list[bool]) -> None:
        c = self.counters
        c["rewards/items"] += len(results)
        c["rewards/truncated"] += sum(truncated)
        c["rewards/timeouts"] += sum(r.timed_out for r in results)
        c["rewards/errors"] += sum(bool(r.error) for r in results)
        c["rewards/sympy_fallbacks"] += sum(r.method == "sympy" for r in results)


def default_num_workers() -> int:
    """One worker per available CPU core (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
