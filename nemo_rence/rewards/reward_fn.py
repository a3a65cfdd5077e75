"""``MathReward``: the paper's math reward as a :class:`~nemo_rence.rewards.protocol.RewardFn`.

It owns a :class:`~nemo_rence.rewards.pool.GraderPool` (started lazily, closed by ``close()`` or a
``with`` block) and grades each response against ``record.answer``, in the form the record asks
for (``record.metadata["answer_form"]``, see :func:`~nemo_rence.rewards.math.enforce_answer_form`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from nemo_rence.config import ConfigError
from nemo_rence.data.records import PromptRecord
from nemo_rence.rewards.extract import extract_boxed, extract_free_text
from nemo_rence.rewards.math import EXTRACT_MODES, RewardResult, enforce_answer_form
from nemo_rence.rewards.pool import GraderConfig, GraderPool


@dataclass
class RewardConfig:
    """Settings of the math reward.

    Attributes:
        grader: the process-pool settings, including ``mode`` ("paper": 1 / 0.1 / 0, as ReNCE
            section 4.1; "binary": 1 / 0, as ConSPO), ``timeout_s`` and ``max_chars``.
        extract: how a response's answer is found. "boxed" (default; the paper's reward: the
            last ``\\boxed{}``, an unboxed response scores 0) or "free_text", only for a
            benchmark whose schema asks for free-text answers: an unboxed response is graded on
            its "the answer is ..." / ``#### x`` / last number
            (:func:`~nemo_rence.rewards.extract.extract_free_text`) like a boxed answer, with
            ``boxed`` left False.
    """

    grader: GraderConfig = field(default_factory=GraderConfig)
    extract: str = "boxed"

    def __post_init__(self) -> None:
        if not isinstance(self.grader, GraderConfig):
            raise TypeError(f"grader must be a GraderConfig, got {type(self.grader).__name__}")
        if self.extract not in EXTRACT_MODES:
            raise ConfigError(
                f"reward.extract must be one of {list(EXTRACT_MODES)}, got {self.extract!r}"
            )


class MathReward:
    """Boxed-answer math reward graded in a worker pool with hard per-item time limits."""

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()
        self.pool = GraderPool(config=self.config.grader)

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
                    answer = extract_free_text(text[-self.config.grader.max_chars :])
                    if answer is not None:
                        texts[i], free[i] = "\\boxed{" + answer + "}", True
        results = self.pool.score_batch(texts, [r.answer for r in records])
        results = [
            dataclasses.replace(res, boxed=False) if was_free else res
            for res, was_free in zip(results, free, strict=True)
        ]
        mode = self.config.grader.mode
        return [
            enforce_answer_form(res, rec.metadata.get("answer_form", "any"), mode)
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
