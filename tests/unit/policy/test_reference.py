"""``policy.reference``: pi_ref frozen at the initial weights or synchronised every s optimizer
steps, forward only, restored bit for bit, saved with the run; and the config check."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nemo_rence.config import ConfigError, compose
from nemo_rence.policy.interface import PolicyBatch
from nemo_rence.policy.reference import ReferencePolicy, train_step


class _Toy:
    """A 'policy': one linear layer; logprobs = log_softmax(W x)[token]; a step adds 1 to W."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(3, 4, bias=False)
        self.steps = 0
        self.seen_ref: list[torch.Tensor] = []

    def logprobs(self, batch: PolicyBatch) -> torch.Tensor:
        x = torch.nn.functional.one_hot(batch.input_ids[:, 0], 3).float()
        lp = torch.log_softmax(self.model(x), -1)
        return lp.gather(1, batch.input_ids[:, 1:2] % 4).detach()

    def train_step(self, batch: PolicyBatch, loss_fn, lr=None):
        self.seen_ref.append(batch.extras.ref_logprobs.clone())
        with torch.no_grad():
            self.model.weight.add_(1.0)
        self.steps += 1
        return {"train/skipped_steps": 0.0}


def _batch() -> PolicyBatch:
    ids = torch.tensor([[0, 1], [1, 2], [2, 3]])
    one = torch.ones(3, dtype=torch.long)
    return PolicyBatch(ids, one, one, torch.tensor([0, 0, 1]))


def test_a_frozen_reference_scores_with_the_initial_weights_and_restores_the_policy():
    toy = _Toy()
    initial = toy.logprobs(_batch())
    ref = ReferencePolicy(toy.model, toy.logprobs, sync_every=0)
    for _ in range(3):
        train_step(toy, ref, _batch(), None, 1e-3)
    trained = toy.model.weight.detach().clone()
    torch.testing.assert_close(ref.logprobs(_batch()), initial, rtol=0, atol=0)
    assert torch.equal(toy.model.weight, trained)  # swapped back bit for bit
    assert all(torch.equal(r, initial) for r in toy.seen_ref)
    assert not any(p.grad is not None for p in toy.model.parameters())


def test_a_synchronised_reference_follows_the_policy_every_s_steps():
    toy = _Toy()
    ref = ReferencePolicy(toy.model, toy.logprobs, sync_every=2)
    scores = []
    for _ in range(5):
        scores.append(toy.logprobs(_batch()))  # pi_theta before each step
        m = train_step(toy, ref, _batch(), None, 1e-3)
    # steps 1, 2 see the initial weights; 3, 4 those after step 2; 5 those after step 4
    for k, expect in enumerate([0, 0, 2, 2, 4]):
        torch.testing.assert_close(toy.seen_ref[k], scores[expect], rtol=0, atol=0)
    assert m["reference/synced_at"] == 4.0


def test_the_reference_state_round_trips_through_its_state_dict():
    toy = _Toy()
    ref = ReferencePolicy(toy.model, toy.logprobs, sync_every=2)
    for _ in range(3):
        train_step(toy, ref, _batch(), None, 1e-3)
    state = ref.state_dict()
    expect = ref.logprobs(_batch())
    other = _Toy()  # a resumed run: fresh initial weights, then the saved state
    other.model.load_state_dict(toy.model.state_dict())
    restored = ReferencePolicy(other.model, other.logprobs, sync_every=2)
    restored.load_state_dict(state)
    assert (restored.steps, restored.synced_at) == (3, 2)
    torch.testing.assert_close(restored.logprobs(_batch()), expect, rtol=0, atol=0)


def test_a_reference_synced_at_the_checkpoint_step_is_rebuilt_from_the_restored_policy():
    toy = _Toy()
    ref = ReferencePolicy(toy.model, toy.logprobs, sync_every=2)
    for _ in range(4):
        train_step(toy, ref, _batch(), None, 1e-3)
    state = ref.state_dict()
    assert "weights" not in state  # synced at step 4, the checkpoint's own: no copy saved
    expect = ref.logprobs(_batch())
    other = _Toy()
    restored = ReferencePolicy(other.model, other.logprobs, sync_every=2)  # initial weights
    other.model.load_state_dict(toy.model.state_dict())  # the run restores the policy first
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.logprobs(_batch()), expect, rtol=0, atol=0)


def test_a_loss_that_needs_a_reference_without_one_is_a_config_error():
    with pytest.raises(ConfigError, match=r"reference.sync_every"):
        compose(["model=tiny", "algorithm=grpo", "reference.sync_every=null"])
    with pytest.raises(ConfigError, match=r"semi_online_dpo"):
        compose(["model=tiny", "algorithm=semi_online_dpo", "reference.sync_every=null"])
    compose(["model=tiny", "algorithm=grpo", "loss.kl_beta=0", "reference.sync_every=null"])


def test_presets_provide_the_reference_they_need():
    assert compose(["model=tiny", "algorithm=grpo"]).reference.sync_every == 0
    dpo = compose(["model=tiny", "algorithm=semi_online_dpo"])
    assert dpo.reference.sync_every == dpo.optim.n_update == 2  # scale=cpu: n_update 2
    paper = compose(["model=tiny", "algorithm=semi_online_dpo", "scale=paper"])
    assert paper.reference.sync_every == paper.optim.n_update == 16
    with pytest.raises(ConfigError, match=r"reference.sync_every must be >= 0"):
        compose(["model=tiny", "reference.sync_every=-1"])
