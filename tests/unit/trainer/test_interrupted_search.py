"""``Trainer.train_iteration(should_stop=...)``: an interrupted batch search raises on every rank
and its accepted groups survive the trainer's (plain-container) state dict."""

from __future__ import annotations

import copy
import itertools

import pytest

from nemo_rence.algorithm.filter import SearchInterrupted
from nemo_rence.config import compose
from nemo_rence.data.records import PromptRecord
from nemo_rence.loop import Components, Trainer
from tests.unit.trainer.test_rollout_rewards import _Engine, _Reward


class _Policy:
    def export_weights(self):
        return iter(())


def _trainer(engine) -> Trainer:
    # rollout.truncated_reward=0: the fake engine's group is [1, 0], rho = 0.5, accepted
    cfg = compose(["model=tiny", "filter.batch_size=2", "rollout.truncated_reward=0"])
    counter = itertools.count()
    parts = Components(
        policy=_Policy(),  # type: ignore[arg-type]
        engine=engine,
        reward=_Reward(),
        encode=lambda record: [1, 2, 3],
        decode=lambda tokens: "the answer is \\boxed{4}",
        eos_token_ids=(0,),
        source=lambda: [PromptRecord(f"p{next(counter)}", "2 + 2", "4", "toy")],
        heldout=[],
    )
    return Trainer(cfg, parts, logger=None)


def test_the_interrupted_search_keeps_its_group_through_the_trainer_state():
    trainer = _trainer(_Engine())
    with pytest.raises(SearchInterrupted, match=r"after 1 draws .* with 1 of 2 groups"):
        trainer.train_iteration(should_stop=lambda: True)
    assert trainer.iteration == 0 and trainer.timer.pop() == {}
    state = copy.deepcopy(trainer.state_dict())
    (group,) = state["filter"]["pending"]["groups"]
    assert group["prompt"] == {
        "id": "p0",
        "problem": "2 + 2",
        "answer": "4",
        "source": "toy",
        "metadata": {},
    }
    assert group["rewards"] == [1.0, 0.0]
    resumed = _trainer(None)
    resumed.load_state_dict(state)
    assert resumed.filter.pending is not None
    (kept,) = resumed.filter.pending[0]
    assert kept.prompt == PromptRecord("p0", "2 + 2", "4", "toy")
    assert resumed.filter.pending[1].draws == 1
