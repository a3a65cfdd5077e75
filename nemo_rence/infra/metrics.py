"""Run metrics: namespaced scalars to JSONL and TensorBoard, and named stage timers.

Every iteration logs one JSON line ``{"iteration": i, "<stage>/<name>": value, ...}`` to
``<run_dir>/metrics.jsonl`` and the same scalars to TensorBoard under ``<run_dir>/tb``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger", "StageTimer"]


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
    """Writes metrics to ``metrics.jsonl`` (always) and TensorBoard (when installed)."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
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

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record: dict[str, Any] = {"iteration": step}
        for key, value in metrics.items():
            scalar = _scalar(value)
            record[key] = scalar
            if self._tb is not None and scalar is not None:
                self._tb.add_scalar(key, scalar, step)
        self._jsonl.write(json.dumps(record, sort_keys=True) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
