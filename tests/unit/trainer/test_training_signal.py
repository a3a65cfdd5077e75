"""The training signal through ``Trainer.train_iteration`` with a fake policy and engine: the KL
controller is fed the KL the loss declares (issue 17, defect 2), skipped steps are counted."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nemo_rence.config import compose
from nemo_rence.data.records import PromptRecord
from nemo_rence.loop import Components, Trainer
from nemo_rence.policy.interface import MicroBatch, PolicyBatch
from nemo_rence.rollout import Rollouts
from tests.unit.trainer.test_rollout_rewards import _Reward


class _Engine:
    """Two rollouts of one prompt, the second cut off (reward 0 with truncated_reward=0)."""

    def __init__(self) -> None:
        self.version = 0

    def generate(self, prompts, params):
        return Rollouts(
            prompt_index=[0, 0],
            token_ids=[[5, 6], [7, 8, 9]],
            logprobs=[[-0.1, -0.2], [-0.3, -0.4, -0.5]],
            finish_reason=["eos", "length"],
            weight_version=self.version,
        )

    def update_weights(self, bucket, version):
        self.version = version

    def finalize_weights(self, version):
        self.version = version


class _Policy:
    """pi_old = the engine's logprobs; pi_theta = pi_old + ``shift`` on every token."""

    def __init__(self, shift: float, engine_gap: float = 0.0) -> None:
        self.shift = shift
        self.engine_gap = engine_gap  # pi_old = the engine's logprobs + this on every token
        self.seen: list[dict[str, torch.Tensor]] = []

    def logprobs(self, batch: PolicyBatch) -> torch.Tensor:
        return batch.extras.engine_logprobs + self.engine_gap * batch.response_mask

    def train_step(self, batch: PolicyBatch, loss_fn, lr=None):
        self.seen.append(batch.extras.present())
        mask = batch.response_mask
        micro = MicroBatch(
            rows=torch.arange(batch.size),
            response_mask=mask,
            group_ids=batch.group_ids,
            extras=batch.extras,
            num_groups_global=len(set(batch.group_ids.tolist())),
            num_tokens_global=int(mask.sum()),
            num_micro_batches=1,
        )
        lp = (batch.extras.old_logprobs + self.shift * mask).requires_grad_(True)
        loss, metrics = loss_fn(lp, micro)
        out = {k: float(torch.as_tensor(v).float().mean()) for k, v in metrics.items()}
        return {**out, "policy/loss": float(loss.detach()), "train/skipped_steps": 0.0}

    def export_weights(self):
        return iter(())


def _trainer(policy, *overrides: str) -> Trainer:
    cfg = compose(
        [
            "model=tiny",
            "filter.batch_size=1",
            "optim.mini_batch_size=1",
            "optim.n_update=2",
            "rollout.truncated_reward=0",
            "run.max_refit_gap=100",
            *overrides,
        ]
    )
    counter = itertools.count()
    parts = Components(
        policy=policy,
        engine=_Engine(),  # type: ignore[arg-type]
        reward=_Reward(),
        encode=lambda record: [1, 2, 3],
        decode=lambda tokens: "the answer is \\boxed{4}",
        eos_token_ids=(0,),
        source=lambda: [PromptRecord(f"p{next(counter)}", "2 + 2", "4", "toy")],
        heldout=[],
    )
    return Trainer(cfg, parts, logger=None)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_the_adaptive_controller_raises_lambda_when_the_declared_kl_exceeds_the_target(estimator):
    # pi_theta = pi_old - 0.5 per token: KL(pi_old || pi_theta) estimates 0.5 / 0.125 / 0.107,
    # all above the target 0.01, so lambda must grow (the loop read kl/k3 only: k1/k2 saw 0)
    trainer = _trainer(
        _Policy(-0.5),
        "algorithm=rence",
        f"loss.kl_estimator={estimator}",
        "kl.controller=adaptive",
        "kl.init=0.1",
        "kl.target=0.01",
        "kl.horizon=64",
    )
    metrics = trainer.train_iteration()
    assert metrics[f"kl/{estimator}"] > 0.01
    assert trainer.kl.value > 0.1


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_the_adaptive_controller_lowers_lambda_when_the_declared_kl_is_below_the_target(estimator):
    trainer = _trainer(
        _Policy(-1e-4),
        "algorithm=rence",
        f"loss.kl_estimator={estimator}",
        "kl.init=0.1",
        "kl.target=0.01",
        "kl.horizon=64",
    )
    trainer.train_iteration()
    assert trainer.kl.value < 0.1


def test_a_loss_without_a_trust_region_kl_leaves_the_controller_alone():
    trainer = _trainer(_Policy(-0.5), "algorithm=conspo", "kl.init=0.1", "kl.horizon=64")
    trainer.train_iteration()
    assert trainer.kl.value == 0.1


def test_skipped_steps_are_summed_over_the_iteration():
    class Skipping(_Policy):
        def train_step(self, batch, loss_fn, lr=None):
            return {**super().train_step(batch, loss_fn, lr), "train/skipped_steps": 1.0}

    metrics = _trainer(Skipping(0.0), "algorithm=rence").train_iteration()
    assert metrics["train/skipped_steps"] == 2.0
    assert not math.isnan(metrics["loss/total"])


def test_an_engine_that_differs_from_the_policy_shows_mismatch_and_the_masked_share():
    # pi_old / pi_eng = e^0.3 per token: sequences of 2 and 3 tokens have ratios e^0.6, e^0.9;
    # seq_mask with C = 2 (log 2 = 0.69) keeps the first and masks the second
    overrides = ("algorithm=rence", "rollout.reuse_logprobs=false", "rollout_correction.cap=2")
    metrics = _trainer(_Policy(-0.1, 0.3), *overrides, "rollout_correction.mode=seq_mask")
    metrics = metrics.train_iteration()
    assert metrics["mismatch/kl"] == pytest.approx(math.exp(0.3) - 1 - 0.3)
    assert metrics["mismatch/masked_seqs"] == 0.5
    assert metrics["mismatch/masked_tokens"] == pytest.approx(3 / 5)
    plain = _trainer(_Policy(-0.1, 0.3), *overrides).train_iteration()
    assert not any(k.startswith("mismatch/") for k in plain)  # mode none logs nothing new
