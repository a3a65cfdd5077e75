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
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["StopFlag"]

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
