"""Run metrics: namespaced scalars to JSONL, TensorBoard and optional trackers; stage timers.

Every iteration logs one JSON line ``{"iteration": i, "<stage>/<name>": value, ...}`` to
``<run_dir>/metrics.jsonl``, the same scalars to TensorBoard under ``<run_dir>/tb`` and, when
``tracking.backends`` names them, to W&B / MLflow (:mod:`nemo_rence.infra.trackers`) with
``step = i``.
"""

from __future__ import annotations

import atexit
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nemo_rence.infra.trackers import Tracker

__all__ = ["MetricsLogger", "StageTimer", "format_metrics"]


class StageTimer:
    """``with timer("rollout"): ...`` accumulates wall seconds as ``time/rollout``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"time/{stage}"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


def _scalar(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


class MetricsLogger:
    """Writes metrics to ``metrics.jsonl`` (always), TensorBoard (when installed) and ``trackers``.

    ``close()`` ends the trackers' runs as failed when called while an exception propagates (from
    a ``finally:`` or ``__exit__``); a logger never closed is closed as failed at interpreter exit.
    """

    def __init__(
        self, run_dir: str | Path, tensorboard: bool = True, trackers: Sequence[Tracker] = ()
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:  # tensorboard is a core dependency; tolerate its absence
                self._tb = None
        self.trackers = list(trackers)
        self._closed = False
        atexit.register(self._close_at_exit)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record: dict[str, Any] = {"iteration": step}
        finite: dict[str, float] = {}
        for key, value in metrics.items():
            scalar = _scalar(value)
            record[key] = scalar
            if scalar is not None:
                finite[key] = scalar
                if self._tb is not None:
                    self._tb.add_scalar(key, scalar, step)
        self._jsonl.write(json.dumps(record, sort_keys=True) + "\n")
        self._jsonl.flush()
        for tracker in self.trackers:
            tracker.log(step, finite)

    def flush(self) -> None:
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self, failed: bool | None = None) -> None:
        """Close the files and end the trackers' runs (``failed`` None: an exception in flight).

        Every tracker is closed even when one raises; the first error is raised afterwards
        unless an exception is already propagating.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        in_flight = sys.exc_info()[1] is not None
        failed = in_flight if failed is None else failed
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        errors: list[BaseException] = []
        for tracker in self.trackers:
            try:
                tracker.close(failed=failed)
            except Exception as err:
                errors.append(err)
        if errors and not in_flight:
            raise errors[0]

    def _close_at_exit(self) -> None:
        self.close(failed=True)

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(failed=exc[0] is not None)


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``{"eval/accuracy": 0.2, "eval/aime24/avg@4": 0.1}`` -> ``"accuracy 0.200, aime24/avg@4
    0.100"`` (sorted by key; the namespace dropped)."""
    return ", ".join(f"{k.split('/', 1)[-1]} {v:.3f}" for k, v in sorted(metrics.items()))
