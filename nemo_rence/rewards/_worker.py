"""The grading worker process of :class:`nemo_rence.rewards.pool.GraderPool`.

The fork server preloads :mod:`nemo_rence.rewards._preload`, which imports this module and warms
math-verify's LaTeX parser once, so every forked worker starts ready in milliseconds. Importing
this module itself is cheap (the parent imports it to name the worker's entry point).

Protocol over the duplex pipe (all messages are tuples):

- worker -> parent: ``("ready", pid)`` once, then ``("result", index, RewardResult)`` per item;
- parent -> worker: ``("batch", [(index, response, gold), ...])``, or ``None`` to exit.

A worker dies with the process that owns its pool (:func:`die_with_parent`), even when that
process is killed with SIGKILL and cannot close its pipes: on Linux the kernel sends the worker
SIGKILL when its parent exits (``prctl(PR_SET_PDEATHSIG)``; the fork server, the workers' parent
under ``forkserver``, gets the same from the pool's owner), and everywhere the idle worker checks
every second that the owner is still alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from typing import Any

from nemo_rence.rewards.math import failed_result, score
from nemo_rence.signals import die_with_parent, orphaned


class SoftTimeout(BaseException):
    """Raised by the worker's own alarm. A BaseException, so that the ``except Exception``
    blocks of math-verify and sympy cannot swallow it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise SoftTimeout


OWNER_ENV = "NEMO_RENCE_GRADER_OWNER"
"""Environment variable holding the pid of the pool's owner, read by the fork server's preload."""


def warm_up() -> None:
    """Import math-verify and run one parse + verify so that the first real item is fast."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    with contextlib.suppress(Exception):  # warming is an optimisation only
        score(r"\boxed{\frac{x^2}{2}}", r"\frac{x^{2}}{2}+0", sympy_timeout_s=None)


def _limit_memory(limit_mb: int | None) -> None:
    if limit_mb is None:
        return
    try:
        import resource

        limit = int(limit_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # not available on this platform
        pass


def grade_one(response: str, gold: str, settings: dict[str, Any]) -> Any:
    """Grade one item under the soft alarm; a runaway item returns a timed-out result."""
    start = time.perf_counter()
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, settings["soft_timeout_s"])
            return score(
                response,
                gold,
                mode=settings["mode"],
                max_chars=settings["max_chars"],
                use_sympy=settings["use_sympy"],
                sympy_timeout_s=None,
            )
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except SoftTimeout:
        return failed_result(timed_out=True, elapsed_s=time.perf_counter() - start)


def worker_main(conn: Any, settings: dict[str, Any]) -> None:
    """Entry point of a worker process: grade batches until told to stop or orphaned."""
    # Ctrl-C and the scheduler's preemption / cancel signals are the trainer's to handle: SLURM
    # signals every process of a job step, and a grader dying there would break the checkpoint
    # the trainer writes on that very signal. The pool stops workers itself (pipe EOF, SIGKILL).
    for sig in (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    owner = settings.get("owner_pid")
    parent = die_with_parent(owner)
    _limit_memory(settings.get("memory_limit_mb"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warm_up()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            if not conn.poll(1.0):
                if orphaned(owner, parent):  # a watchdog where PR_SET_PDEATHSIG is missing
                    return
                continue
            msg = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if msg is None:
            return
        _, batch = msg
        for index, response, gold in batch:
            result = grade_one(response, gold, settings)
            try:
                conn.send(("result", index, result))
            except (OSError, ValueError):
                return
