"""The record every prompt source produces, and the report of what a loader skipped."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptRecord:
    """One training or evaluation prompt with its verifiable answer.

    Attributes:
        id: unique within its source (the dataset's own id where it has one).
        problem: the problem statement only (no instruction template; see
            :mod:`nemo_rence.data.template`).
        answer: the reference final answer as text (what ``\\boxed{}`` should contain).
        source: dataset or benchmark name ("dapo", "math", "math500", "synthetic", ...).
        metadata: any other fields worth keeping (level, subject, url ...).
    """

    id: str
    problem: str
    answer: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class LoadReport:
    """What a loader read, kept and skipped (rows without a usable answer are never silent).

    Attributes:
        source: the dataset or benchmark name.
        path: the file read ("" for in-package data).
        rows: rows read (including skipped ones).
        skipped: skip reason -> count: "malformed", "invalid_utf8", "too_long" (the reader),
            "no_problem", "no_answer" (the row parser), "duplicate", "duplicate_other_answer",
            "in_heldout" (:func:`nemo_rence.data.datasets.load_datasets`) ...
        examples: reason -> up to 3 example row locations, for the error message.
    """

    source: str
    path: str = ""
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        """Rows turned into records."""
        return self.rows - sum(self.skipped.values())

    def skip(self, reason: str, where: str) -> None:
        """Count one skipped row."""
        self.skipped[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 3:
            ex.append(where)

    def summary(self) -> str:
        """One line for logs: ``dapo: kept 17398 of 17400 rows (skipped: no_answer=2 ...)``."""
        text = f"{self.source}: kept {self.kept} of {self.rows} rows"
        if self.skipped:
            parts = ", ".join(
                f"{r}={n} (e.g. {', '.join(self.examples.get(r, []))})"
                for r, n in sorted(self.skipped.items())
            )
            text += f" (skipped: {parts})"
        return text + (f" from {self.path}" if self.path else "")

    def log(self) -> None:
        """Log the summary, as a warning when rows were skipped."""
        (_LOG.warning if self.skipped else _LOG.info)("%s", self.summary())


@dataclass
class LoadResult:
    """Records and the report of the load that produced them."""

    records: list[PromptRecord]
    report: LoadReport

    def __len__(self) -> int:
        return len(self.records)
