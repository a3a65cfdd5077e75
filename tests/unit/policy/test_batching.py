"""The policy batch contract and micro-batching by whole groups (no processes, no model)."""

from __future__ import annotations

import pytest
import torch

from nemo_rence.policy.interface import MicroBatch, PolicyBatch, algorithm_loss
from nemo_rence.policy.megatron.optimizer import OptimizerSettings
from nemo_rence.policy.megatron.policy import MegatronPolicyConfig, plan_group_micro_batches


def _batch(group_ids, p=None, r=None, length=6, **kw) -> PolicyBatch:
    n = len(group_ids)
    p = torch.tensor(p if p is not None else [2] * n)
    r = torch.tensor(r if r is not None else [3] * n)
    return PolicyBatch(
        torch.zeros(n, length, dtype=torch.long), p, r, torch.tensor(group_ids), **kw
    )


def test_micro_batches_hold_whole_groups_in_order_of_first_appearance():
    plans = plan_group_micro_batches(torch.tensor([7, 3, 7, 3, 9, 7, 3, 9, 9]), 6)
    assert [p.tolist() for p in plans] == [[0, 2, 5, 1, 3, 6], [4, 7, 8]]


def test_ragged_groups_are_packed_without_splitting():
    plans = plan_group_micro_batches(torch.tensor([0, 0, 1, 1, 1, 2, 3, 3]), 4)
    assert [p.tolist() for p in plans] == [[0, 1], [2, 3, 4, 5], [6, 7]]
    assert sorted(torch.cat(plans).tolist()) == list(range(8))


@pytest.mark.parametrize("mbs", [4, 5, 7])
def test_a_micro_batch_size_that_would_split_groups_raises(mbs):
    with pytest.raises(ValueError, match=r"would split groups of 3 rollouts.*multiple of 3"):
        plan_group_micro_batches(torch.tensor([0, 0, 0, 1, 1, 1]), mbs)


def test_a_group_larger_than_the_micro_batch_raises():
    with pytest.raises(ValueError, match="would split group 1 of 5 rollouts"):
        plan_group_micro_batches(torch.tensor([0, 0, 1, 1, 1, 1, 1]), 4)


def test_response_mask_follows_the_padding_contract():
    b = _batch([0, 0, 1], p=[2, 2, 1], r=[3, 1, 2], length=5)
    assert b.width == 3 and b.num_tokens() == 6
    assert b.response_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    wide = _batch([0, 1], r=[1, 2], response_width=5)
    assert wide.response_mask.shape == (2, 5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p": [0, 2]}, "at least one prompt token"),
        ({"r": [-1, 2]}, ">= 0"),
        ({"p": [4, 2], "r": [3, 1]}, "exceeds L=6"),
        ({"response_width": 2}, "response_width=2"),
        ({"extras": {"rewards": torch.zeros(3)}}, "first dim N=2"),
    ],
)
def test_bad_batches_fail_with_a_clear_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _batch([0, 1], **kwargs)


def test_config_validation():
    with pytest.raises(ValueError, match="micro_batch_size"):
        MegatronPolicyConfig(micro_batch_size=0)
    with pytest.raises(ValueError, match="temperature"):
        MegatronPolicyConfig(temperature=0.0)
    with pytest.raises(ValueError, match="lr"):
        OptimizerSettings(lr=0.0)


def _micro(n=4, t=3, **extras) -> MicroBatch:
    return MicroBatch(
        rows=torch.arange(n),
        response_mask=torch.ones(n, t),
        group_ids=torch.tensor([0, 0, 1, 1][:n]),
        extras=extras,
        num_groups_global=4,
        num_tokens_global=24,
        num_micro_batches=2,
    )


def test_algorithm_loss_adapter_passes_global_normalisers():
    """With global normalisers, two half-batches' losses sum to the full batch's loss."""
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(8, 3, generator=g)
    old = lp + 0.1 * torch.randn(8, 3, generator=g)
    rewards = torch.tensor([1.0, 0.0, 0.1, 1.0, 0.0, 1.0, 0.0, 0.1])
    gids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss_fn = algorithm_loss("rence", {"beta": 0.1}, kl_coef=0.01)

    def mb(rows):
        return MicroBatch(
            rows=rows,
            response_mask=torch.ones(len(rows), 3),
            group_ids=gids[rows],
            extras={"old_logprobs": old[rows], "rewards": rewards[rows]},
            num_groups_global=4,
            num_tokens_global=24,
            num_micro_batches=2,
        )

    full, _ = loss_fn(lp, mb(torch.arange(8)))
    a, _ = loss_fn(lp[:4], mb(torch.arange(4)))
    b, _ = loss_fn(lp[4:], mb(torch.arange(4, 8)))
    torch.testing.assert_close(a + b, full)


def test_algorithm_loss_adapter_names_missing_extras():
    loss_fn = algorithm_loss("rence")
    with pytest.raises(KeyError, match="old_logprobs"):
        loss_fn(torch.zeros(4, 3), _micro(rewards=torch.zeros(4)))
