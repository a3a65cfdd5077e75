"""The trainer's stop flag: SIGUSR1 / SIGTERM / SIGINT ask for a checkpoint and a clean exit.

Install it first thing, before anything heavy is imported or built, so that a signal arriving
during start-up is recorded instead of killing the run::

    stop = StopFlag.install()          # before compose / build
    ...
    if stop.signal is not None:        # after an iteration, or between draws of a batch search
        ckpt.save(trainer); return stop.exit_code

* SIGUSR1 / SIGTERM (SLURM preemption and cancel): finish the current iteration, or stop its
  batch search after the current draw, checkpoint, exit 0 (the job is requeued and resumes).
* SIGINT (Ctrl-C): the same, announced in one line on stderr, exit code 130 (128 + SIGINT, the
  shell's convention for an interrupted command). A second Ctrl-C aborts at once, exit 130,
  without a checkpoint of the current iteration (the previous checkpoint is complete: writes
  are atomic).

Helper processes die with the trainer, even when it is killed with SIGKILL:
:func:`die_with_parent` (the grader's workers and fork server, megatron's checkpoint-writer
manager through :func:`own_megatron_writer_queue`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "StopFlag",
    "die_with_parent",
    "orphaned",
    "own_megatron_writer_queue",
    "process_alive",
]

_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class StopFlag:
    """Records the first stop signal; see the module docstring."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @classmethod
    def install(cls) -> StopFlag:
        """A flag whose handlers are installed for SIGUSR1, SIGTERM and SIGINT."""
        flag = cls()
        for sig in _SIGNALS:
            signal.signal(sig, flag._handle)
        return flag

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            if self.signal is not None:
                sys.stderr.write("\ninterrupted again: aborting now, without a checkpoint\n")
                sys.stderr.flush()
                os._exit(130)
            sys.stderr.write(
                "\ninterrupted: finishing the current step, then checkpointing and exiting "
                "(Ctrl-C again to abort now)\n"
            )
            sys.stderr.flush()
        if self.signal is None:
            self.signal = signum

    @property
    def exit_code(self) -> int:
        """130 after SIGINT (interrupted), 0 after SIGUSR1 / SIGTERM (preempted, resumable)."""
        return 128 + int(signal.SIGINT) if self.signal == signal.SIGINT else 0

    def describe(self) -> str:
        """The signal's name, e.g. ``SIGINT``; empty before any signal."""
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def or_else(self, guard: Callable[[], bool]) -> Callable[[], bool]:
        """``should_stop`` of a batch search: a signal arrived, or ``guard()`` says stop."""
        return lambda: self.signal is not None or guard()


_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal() -> None:
    """Linux: have the kernel SIGKILL this process when its parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphaned(owner_pid: int | None, parent_pid: int) -> bool:
    """Whether ``owner_pid`` is gone, or this process was re-parented away from ``parent_pid``."""
    return os.getppid() != parent_pid or (owner_pid is not None and not process_alive(owner_pid))


def die_with_parent(owner_pid: int | None = None) -> int:
    """Make this (helper) process die with its parent; returns the parent's pid.

    On Linux the kernel sends SIGKILL when the parent exits, however it exits
    (``prctl(PR_SET_PDEATHSIG)``; a SIGSTOPped or busy process dies too); elsewhere callers poll
    :func:`orphaned`. Exits at once when the parent, or ``owner_pid``, is already gone.
    """
    parent = os.getppid()
    _set_parent_death_signal()
    if parent == 1 or orphaned(owner_pid, parent):
        os._exit(1)
    return parent


def own_megatron_writer_queue() -> None:
    """Start megatron's checkpoint-writer result queue in a manager process that dies with us.

    ``megatron.core.dist_checkpointing`` creates, on its first save, a ``spawn`` multiprocessing
    Manager (a ~280 MB Python process) that never exits when its parent is killed. Created here
    first, the same queue lives in a manager started with :func:`die_with_parent`. No-op when
    megatron is not in use (not imported) or the queue exists.
    """
    if "megatron.core" not in sys.modules:
        return
    try:
        from megatron.core.dist_checkpointing.strategies import filesystem_async as fa
    except ImportError:
        return
    if getattr(fa, "_results_queue", "absent") is not None:
        return
    import multiprocessing as mp
    from multiprocessing.managers import SyncManager

    manager = SyncManager(ctx=mp.get_context("spawn"))
    manager.start(initializer=die_with_parent, initargs=(os.getpid(),))
    fa._managers_of_nemo_rence = manager  # keeps it alive
    fa._results_queue = manager.Queue()
