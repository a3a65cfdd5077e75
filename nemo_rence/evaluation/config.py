"""The ``eval`` section: the paper's benchmark evaluation inside training (ReNCE Sec. 4.1).

Every ``eval.every`` iterations (and before and after training) each benchmark file is evaluated
with ``eval.k`` samples per problem at ``eval.temperature`` through the same code as
``nemo-rence eval`` (:func:`nemo_rence.evaluation.runner.evaluate_benchmark`)::

    eval:
      benchmarks: {math500: /data/math500.jsonl, aime24: /data/aime24.jsonl}
      every: 5
      k: 4
      temperature: 0.7

Metrics: ``eval/<name>/avg@k``, ``eval/<name>/std``, ``eval/<name>/pass@k`` and ``eval/avg`` (the
mean of the benchmarks' avg@k); with benchmarks, ``checkpoints/best`` is chosen by ``eval/avg``
(the paper selects the checkpoint with the best average validation performance). The held-out
split of the training data is evaluated as before (greedy ``eval/accuracy``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from nemo_rence.errors import ConfigError

__all__ = ["EvalConfig"]


@dataclass
class EvalConfig:
    """Benchmarks evaluated during training (none by default)."""

    benchmarks: dict[str, str] = field(default_factory=dict)
    """Benchmark name -> local file (jsonl/json/parquet in the benchmark's public schema; the
    name picks the schema when it is a registered benchmark: math500, aime24, aime25, amc,
    minerva, olympiadbench, aime26, hmmt25, else the generic one)."""
    every: int = 0
    """Evaluate the benchmarks every N iterations (0: ``run.eval_every``); always before and
    after training."""
    k: int = 4
    """Samples per problem; pass@1 is reported as avg@k (paper: 4)."""
    temperature: float = 0.7
    """Sampling temperature (paper: 0.7)."""
    top_p: float = 1.0
    """Nucleus mass in (0, 1]."""
    max_new_tokens: int | None = None
    """Response length limit (None: ``rollout.max_new_tokens``)."""
    batch_size: int = 64
    """Prompts per generate call."""

    def __post_init__(self) -> None:
        for name, value in (("k", self.k), ("batch_size", self.batch_size)):
            if value < 1:
                raise ConfigError(f"eval.{name} must be >= 1, got {value!r}")
        if self.every < 0:
            raise ConfigError(f"eval.every must be >= 0, got {self.every!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(
                f"eval.temperature must be a finite number >= 0, got {self.temperature!r}"
            )
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise ConfigError(f"eval.top_p must be in (0, 1], got {self.top_p!r}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"eval.max_new_tokens must be >= 1, got {self.max_new_tokens!r}")

    def check_files(self) -> None:
        """Every benchmark file exists (a config error naming the field otherwise)."""
        for name, path in self.benchmarks.items():
            if not Path(path).is_file():
                raise ConfigError(f"eval.benchmarks.{name}: benchmark file not found: {path}")
