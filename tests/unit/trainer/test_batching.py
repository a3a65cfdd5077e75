"""Stage-to-stage data munging: engine rollouts -> groups -> policy batches -> mini-batches."""

from __future__ import annotations

import random
from types import SimpleNamespace

import torch

from nemo_rence.batching import (
    groups_to_policy_batch,
    mini_batches,
    rollouts_to_groups,
    select_groups,
)
from nemo_rence.rollout import Rollouts


def _rollouts():
    # 2 prompts x K=2, ragged responses
    return Rollouts(
        prompt_index=[0, 0, 1, 1],
        token_ids=[[7, 8, 9], [7], [5, 6], []],
        logprobs=[[-0.1, -0.2, -0.3], [-0.4], [-0.5, -0.6], []],
        finish_reason=["eos", "eos", "length", "eos"],
        weight_version=3,
    )


def _groups():
    prompts = [SimpleNamespace(id="a"), SimpleNamespace(id="b")]
    results = [SimpleNamespace(reward=r) for r in (1.0, 0.1, 0.0, 1.0)]
    return rollouts_to_groups(prompts, [[1, 2], [3]], _rollouts(), results)


def test_rollouts_are_regrouped_by_prompt_with_their_rewards():
    a, b = _groups()
    assert (a.prompt_id, a.rewards, a.rollouts.token_ids) == ("a", [1.0, 0.1], [[7, 8, 9], [7]])
    assert (b.prompt_id, b.rewards, b.rollouts.version) == ("b", [0.0, 1.0], 3)


def test_policy_batch_follows_the_padding_contract():
    batch = groups_to_policy_batch(_groups())
    assert batch.input_ids.tolist() == [
        [1, 2, 7, 8, 9],
        [1, 2, 7, 0, 0],
        [3, 5, 6, 0, 0],
        [3, 0, 0, 0, 0],
    ]
    assert batch.prompt_lengths.tolist() == [2, 2, 1, 1]
    assert batch.response_lengths.tolist() == [3, 1, 2, 0]
    assert batch.group_ids.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(batch.extras.rewards, torch.tensor([1.0, 0.1, 0.0, 1.0]))
    torch.testing.assert_close(
        batch.extras.engine_logprobs,
        torch.tensor(
            [[-0.1, -0.2, -0.3], [-0.4, 0, 0], [-0.5, -0.6, 0], [0, 0, 0]], dtype=torch.float32
        ),
    )
    assert batch.response_mask.tolist()[1] == [1, 0, 0]


def test_select_groups_keeps_whole_groups_and_the_response_width():
    batch = groups_to_policy_batch(_groups())
    sub = select_groups(batch, [1])
    assert sub.group_ids.tolist() == [1, 1] and sub.width == 3
    assert sub.extras.rewards.tolist() == [0.0, 1.0]


def test_mini_batches_cover_every_group_once_per_pass():
    prompts = [SimpleNamespace(id=str(i)) for i in range(6)]
    ro = Rollouts(
        prompt_index=[i for i in range(6) for _ in range(2)],
        token_ids=[[1]] * 12,
        logprobs=[[-1.0]] * 12,
        finish_reason=["eos"] * 12,
    )
    results = [SimpleNamespace(reward=0.0)] * 12
    batch = groups_to_policy_batch(rollouts_to_groups(prompts, [[9]] * 6, ro, results))
    steps = list(mini_batches(batch, groups_per_step=2, n_update=6, rng=random.Random(0)))
    assert len(steps) == 6 and all(s.size == 4 for s in steps)
    seen = [sorted(set(s.group_ids.tolist())) for s in steps]
    for first in (0, 3):  # each pass of 3 steps sees all 6 groups exactly once
        assert sorted(g for step in seen[first : first + 3] for g in step) == list(range(6))
