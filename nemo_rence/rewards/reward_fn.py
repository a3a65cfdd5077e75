"""``MathReward``: the paper's math reward as a :class:`~nemo_rence.rewards.protocol.RewardFn`.

It owns a :class:`~nemo_rence.rewards.pool.GraderPool` (started lazily, closed by ``close()`` or a
``with`` block) and grades each response against ``record.answer``, in the form the record asks
for (``record.metadata["answer_form"]``, see :func:`~nemo_rence.rewards.math.enforce_answer_form`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from nemo_rence.data.records import PromptRecord
from nemo_rence.rewards.extract import extract_boxed, extract_free_text
from nemo_rence.rewards.math import (
    ANSWER_FORMS,
    DEFAULT_MAX_CHARS,
    EXTRACT_MODES,
    RewardResult,
    enforce_answer_form,
)
from nemo_rence.rewards.pool import GraderConfig, GraderPool

ANSWER_FORM_CHOICES = ("record", *ANSWER_FORMS)
REWARD_MODES = ("paper", "binary")


@dataclass
class RewardConfig:
    """How a response is graded: the ``reward`` section of the training config."""

    mode: str = "paper"
    """'paper': 1 boxed and correct, 0.1 boxed and wrong, 0 otherwise (ReNCE Sec. 4.1);
    'binary': 1 correct, 0 otherwise (ConSPO)."""
    workers: int = 1
    """Grader worker processes (each item runs in a worker with a hard time limit)."""
    timeout_s: float = 5.0
    """Hard time limit per response in seconds; past it the item scores 0 (``timed_out``)."""
    answer_form: str = "record"
    """Which answers count as correct beyond equivalence: 'record' (each record's own
    ``metadata["answer_form"]``: synthetic arithmetic asks for a number, benchmarks for any
    equivalent form), or one form for every record: 'any' or 'number'."""
    max_chars: int = DEFAULT_MAX_CHARS
    """Responses longer than this are graded on their last ``max_chars`` characters."""
    extract: str = "boxed"
    """How a response's answer is found: 'boxed' (the paper's reward: the last ``\\boxed{}``;
    an unboxed response scores 0) or 'free_text', only for a benchmark whose schema asks for
    free-text answers: an unboxed response is graded on its "the answer is ..." / ``#### x`` /
    last number (:func:`~nemo_rence.rewards.extract.extract_free_text`) like a boxed answer,
    with ``boxed`` left False."""

    def __post_init__(self) -> None:
        checks = [
            ("mode", self.mode in REWARD_MODES, f"one of {list(REWARD_MODES)}"),
            ("workers", self.workers >= 1, ">= 1"),
            ("timeout_s", math.isfinite(self.timeout_s) and self.timeout_s > 0, "> 0"),
            (
                "answer_form",
                self.answer_form in ANSWER_FORM_CHOICES,
                f"one of {list(ANSWER_FORM_CHOICES)}",
            ),
            ("max_chars", self.max_chars >= 1, ">= 1"),
            ("extract", self.extract in EXTRACT_MODES, f"one of {list(EXTRACT_MODES)}"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"reward.{name} must be {allowed}, got {getattr(self, name)!r}")

    def grader(self) -> GraderConfig:
        """The worker pool's settings."""
        return GraderConfig(
            num_workers=self.workers,
            timeout_s=self.timeout_s,
            max_chars=self.max_chars,
            mode=self.mode,
        )

    def form_of(self, record: PromptRecord) -> str:
        """The answer form ``record`` is held to."""
        if self.answer_form == "record":
            return str(record.metadata.get("answer_form", "any"))
        return self.answer_form


class MathReward:
    """Boxed-answer math reward graded in a worker pool with hard per-item time limits."""

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()
        self.pool = GraderPool(config=self.config.grader())

    def __call__(self, record: PromptRecord, response: str) -> RewardResult:
        """Grade one response to ``record``."""
        return self.batch([record], [response])[0]

    def batch(
        self, records: Sequence[PromptRecord], responses: Sequence[str]
    ) -> list[RewardResult]:
        """Grade ``responses[i]`` against ``records[i].answer`` (and its answer form)."""
        if len(records) != len(responses):
            raise ValueError(
                f"records and responses must have the same length, got {len(records)} and "
                f"{len(responses)}"
            )
        texts = list(responses)
        free = [False] * len(texts)
        if self.config.extract == "free_text":
            # An unboxed answer found in the text is graded in the pool as if boxed (same hard
            # time limit), then marked not boxed.
            for i, text in enumerate(texts):
                if isinstance(text, str) and extract_boxed(text) is None:
                    answer = extract_free_text(text[-self.config.max_chars :])
                    if answer is not None:
                        texts[i], free[i] = "\\boxed{" + answer + "}", True
        results = self.pool.score_batch(texts, [r.answer for r in records])
        results = [
            dataclasses.replace(res, boxed=False) if was_free else res
            for res, was_free in zip(results, free, strict=True)
        ]
        mode = self.config.mode
        return [
            enforce_answer_form(res, self.config.form_of(rec), mode)
            for res, rec in zip(results, records, strict=True)
        ]

    def metrics(self) -> dict[str, float]:
        """Cumulative grader counters (``rewards/timeouts`` ...)."""
        return self.pool.metrics()

    def close(self) -> None:
        """Stop the worker processes."""
        self.pool.close()

    def __enter__(self) -> MathReward:
        self.pool.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
