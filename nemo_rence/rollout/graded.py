"""Generate and grade: the one path from prompts to graded responses.

Training (Algorithm 1 line 8), the held-out evaluation inside training and ``nemo-rence eval``
all call :func:`generate_and_grade`; they differ only in their :class:`SamplingParams` (K at the
rollout temperature, greedy, or k at the benchmark temperature) and in what they do with the
result::

    prompt ids [P] --engine.generate(params)--> Rollouts (rows grouped by prompt, n per prompt)
               --decode--> texts [R] --reward.batch(records of the rows, texts)--> results [R]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nemo_rence.data.records import PromptRecord
from nemo_rence.rewards.math import RewardResult
from nemo_rence.rewards.protocol import RewardFn
from nemo_rence.rollout.interface import GenerationEngine, Rollouts, SamplingParams

__all__ = ["GradedRollouts", "generate_and_grade"]


@dataclass
class GradedRollouts:
    """The responses of ``params.n`` rollouts per prompt with their grades, row by row.

    Attributes:
        rollouts: the engine's output (``prompt_index[r]`` is row r's prompt).
        texts: [R] decoded responses.
        results: [R] the reward function's verdicts.
    """

    rollouts: Rollouts
    texts: list[str]
    results: list[RewardResult]

    def rows_of(self, prompt: int) -> list[int]:
        """The rows of prompt ``prompt``, in engine order."""
        return [r for r, i in enumerate(self.rollouts.prompt_index) if i == prompt]


def generate_and_grade(
    engine: GenerationEngine,
    records: Sequence[PromptRecord],
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    *,
    decode: Callable[[Sequence[int]], str],
    reward: RewardFn,
    truncated_reward: float | None = None,
) -> GradedRollouts:
    """Sample ``params.n`` responses for each of ``records`` and grade each one.

    Args:
        records: [P] the prompts (their answers are what the grader compares against).
        prompt_ids: [P] their encoded token ids.
        truncated_reward: when not None, replaces the reward of a response cut off at
            ``params.max_new_tokens`` (finish reason 'length'): such a response has no final
            answer (``rollout.truncated_reward``; never used for evaluation).
    """
    out = engine.generate(prompt_ids, params)
    texts = [decode(t) for t in out.token_ids]
    results = reward.batch([records[i] for i in out.prompt_index], texts)
    if truncated_reward is not None:
        results = [
            dataclasses.replace(r, reward=truncated_reward) if reason == "length" else r
            for r, reason in zip(results, out.finish_reason, strict=True)
        ]
    return GradedRollouts(out, texts, list(results))
