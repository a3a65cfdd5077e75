"""A colocated engine releases its memory for the training step and reclaims it before the
refit writes its weights (``release_memory`` / ``reclaim_memory``, duck-typed), timed."""

from __future__ import annotations

import torch

from nemo_rence.config import compose
from nemo_rence.loop import Components, Trainer


class _Policy:
    def export_weights(self):
        yield "w", torch.ones(2)


class _SleepyEngine:
    def __init__(self) -> None:
        self.version = 0
        self.events: list[str] = []

    def release_memory(self) -> None:
        self.events.append("release")

    def reclaim_memory(self) -> None:
        self.events.append("reclaim")

    def update_weights(self, named, version):
        self.events.append("update")
        self.version = version
        return sum(t.numel() for _, t in named)


def _trainer(engine) -> Trainer:
    parts = Components(
        policy=_Policy(),  # type: ignore[arg-type]
        engine=engine,
        reward=None,  # type: ignore[arg-type]
        encode=lambda record: [1],
        decode=lambda tokens: "",
        eos_token_ids=(0,),
        source=lambda: [],
        heldout=[],
    )
    return Trainer(compose(["model=tiny"]), parts, logger=None)


def test_engine_sleeps_through_the_update_and_wakes_before_the_refit_writes_weights():
    engine = _SleepyEngine()
    trainer = _trainer(engine)
    released = trainer._release_engine()
    assert trainer._release_engine() == {}  # already asleep: released once
    report = trainer._refit()
    assert engine.events == ["release", "reclaim", "update"]
    assert released["rollout/release_seconds"] >= 0.0
    assert report["refit/reclaim_seconds"] >= 0.0 and report["refit/version"] == 1.0
    assert "refit/reclaim_seconds" not in trainer._refit()  # awake: nothing to reclaim


def test_an_engine_without_sleep_support_is_left_alone():
    class Plain:
        version = 0

        def update_weights(self, named, version):
            self.version = version
            return 0

    trainer = _trainer(Plain())
    assert trainer._release_engine() == {}
    assert set(trainer._refit()) >= {"refit/version"}
    assert "refit/reclaim_seconds" not in trainer._refit()
