"""Rewards: boxed-answer extraction, answer equivalence, the 1 / 0.1 / 0 math reward.

- :func:`nemo_rence.rewards.math.score` / :func:`~nemo_rence.rewards.math.is_equivalent`:
  in-process grading of one response / one answer.
- :class:`nemo_rence.rewards.pool.GraderPool`: batch grading in worker processes with a hard
  per-item time limit (what a trainer uses).
- :class:`nemo_rence.rewards.reward_fn.MathReward`: the ``RewardFn`` of the training loop.

Submodules are imported on use so that ``import nemo_rence.rewards`` stays cheap.
"""

from nemo_rence.rewards.extract import extract_boxed
from nemo_rence.rewards.math import RewardResult, is_equivalent, score
from nemo_rence.rewards.pool import GraderConfig, GraderPool

__all__ = [
    "GraderConfig",
    "GraderPool",
    "RewardResult",
    "extract_boxed",
    "is_equivalent",
    "score",
]
