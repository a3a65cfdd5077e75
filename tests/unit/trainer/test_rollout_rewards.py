"""``Trainer.rollout_and_grade``: rewards of the rollouts, and ``rollout.truncated_reward``."""

from __future__ import annotations

import pytest

from nemo_rence.config import compose
from nemo_rence.data.records import PromptRecord
from nemo_rence.loop import Components, Trainer, _reward_metrics
from nemo_rence.rewards.math import RewardResult
from nemo_rence.rollout import Rollouts


class _Engine:
    """Two rollouts of one prompt: one ends with EOS, one is cut off at the length limit."""

    version = 0

    def generate(self, prompts, params):
        return Rollouts(
            prompt_index=[0, 0],
            token_ids=[[5, 6], [7, 8, 9]],
            logprobs=[[-0.1, -0.2], [-0.3, -0.4, -0.5]],
            finish_reason=["eos", "length"],
            weight_version=0,
        )


class _Reward:
    """Both responses box the right answer."""

    def batch(self, records, texts):
        return [RewardResult(reward=1.0, boxed=True, correct=True, extracted="4") for _ in texts]


def _trainer(*overrides: str) -> Trainer:
    cfg = compose(["model=tiny", *overrides])
    parts = Components(
        policy=None,  # type: ignore[arg-type]  # rollout_and_grade never touches the policy
        engine=_Engine(),  # type: ignore[arg-type]
        reward=_Reward(),
        encode=lambda record: [1, 2, 3],
        decode=lambda tokens: "the answer is \\boxed{4}",
        eos_token_ids=(0,),
        source=lambda: [],
        heldout=[],
    )
    return Trainer(cfg, parts, logger=None)


@pytest.mark.parametrize(("value", "expect"), [(None, [1.0, 1.0]), (0.0, [1.0, 0.0])])
def test_truncated_rollouts_get_the_configured_reward(value, expect):
    override = (
        "rollout.truncated_reward=null" if value is None else f"rollout.truncated_reward={value}"
    )
    groups = _trainer(override).rollout_and_grade([PromptRecord("p0", "2 + 2", "4", "toy")])
    assert len(groups) == 1 and groups[0].rewards == expect
    metrics = _reward_metrics(groups)
    assert metrics["rollout/truncated_rate"] == 0.5
    assert metrics["reward/correct_rate"] == sum(r >= 1 for r in expect) / 2
