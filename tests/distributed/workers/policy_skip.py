"""One process: a train step with a non-finite loss or gradient is skipped (weights and optimizer
state untouched), counted in ``train/skipped_steps``, and ``max_skipped_steps`` in a row stop.

Usage: torchrun --nproc_per_node 1 policy_skip.py
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import policy_common as pc

from nemo_rence.policy.megatron.parallel import init_parallel, teardown
from nemo_rence.policy.megatron.policy import MegatronPolicy, NonFiniteTrainingError


def nan_loss(logprobs, mb):
    return logprobs.sum() * float("nan"), {"loss/total": float("nan")}


def nan_grad(logprobs, mb):
    # finite value, NaN gradient: sqrt of a negative logprob on the branch torch.where drops
    out = torch.where(torch.zeros_like(logprobs, dtype=torch.bool), logprobs.sqrt(), logprobs)
    return out.sum(), {"loss/total": out.sum().detach()}


def weights(policy):
    return {k: v.clone() for k, v in policy.export_weights()}


def main() -> None:
    init_parallel(1, 1, seed=0)
    cfg = dataclasses.replace(pc.config(), max_skipped_steps=3)
    policy = MegatronPolicy(pc.ARCH, cfg)
    batch = pc.make_batch()
    batch = pc.with_old_logprobs(batch, policy.logprobs(batch))
    before = weights(policy)
    for bad in (nan_loss, nan_grad):
        m = policy.train_step(batch, bad)
        assert m["train/skipped_steps"] == 1.0, m
        after = weights(policy)
        assert all(torch.equal(before[k], after[k]) for k in before), bad.__name__
        assert not policy.optimizer.optimizer.state, "a skipped step created optimizer state"
    pc.check("non_finite_steps_are_skipped_without_touching_weights")

    m = policy.train_step(batch, pc.loss_fn)  # a finite step resets the count
    assert m["train/skipped_steps"] == 0.0 and policy.skipped_in_a_row == 0
    assert all(torch.isfinite(v).all() for v in weights(policy).values())
    policy.train_step(batch, nan_loss)
    policy.train_step(batch, nan_grad)
    try:
        policy.train_step(batch, nan_loss)
    except NonFiniteTrainingError as err:
        assert "3 train steps in a row" in str(err) and "max_skipped_steps=3" in str(err), err
    else:
        raise AssertionError("the third non-finite step in a row did not stop the run")
    pc.check("max_skipped_steps_in_a_row_stop_with_a_clear_error")
    teardown()


if __name__ == "__main__":
    main()
