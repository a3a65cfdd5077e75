"""The ``RewardFn`` contract between the rollout stage and the filter/loss stages.

A reward function maps a prompt record and one response text to a :class:`RewardResult` (the
scalar ``reward`` plus how it was decided). Implementations must never raise and never hang
because of a response: grading of model output runs in worker processes with hard time limits
(see :class:`nemo_rence.rewards.pool.GraderPool`).

Worked example::

    reward_fn: RewardFn = MathReward(RewardConfig(mode="paper"))
    record = PromptRecord(id="p0", problem="1+1?", answer="2", source="synthetic")
    reward_fn(record, r"... \\boxed{2}").reward                       # 1.0
    [r.reward for r in reward_fn.batch([record] * 2, ["\\boxed{3}", "2"])]   # [0.1, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from nemo_rence.data.records import PromptRecord
from nemo_rence.rewards.math import RewardResult


@runtime_checkable
class RewardFn(Protocol):
    """``(prompt record, response) -> RewardResult``, single and batched."""

    def __call__(self, record: PromptRecord, response: str) -> RewardResult:
        """Grade one response to ``record``."""
        ...

    def batch(
        self, records: Sequence[PromptRecord], responses: Sequence[str]
    ) -> list[RewardResult]:
        """Grade ``responses[i]`` as an answer to ``records[i]``; results keep the order."""
        ...
