"""``D.batch()`` of Algorithm 1 (line 5) as a stateful, resumable object.

Example::

    source = PromptSource(records, draw=16, seed=0)
    first = source()                      # the next 16 training prompts
    state = source.state_dict()           # a checkpoint holds the sampler's position
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nemo_rence.data.records import PromptRecord
from nemo_rence.data.sampler import PromptSampler

__all__ = ["PromptSource"]


class PromptSource:
    """Draws ``draw`` training prompts per call, a fresh shuffle each epoch (resumable)."""

    def __init__(self, records: Sequence[PromptRecord], draw: int, seed: int = 0) -> None:
        if draw < 1:
            raise ValueError(f"draw must be >= 1, got {draw}")
        self.records = list(records)
        self.draw = draw
        self.sampler = PromptSampler(len(self.records), seed=seed)

    def __call__(self) -> list[PromptRecord]:
        return [self.records[i] for i in self.sampler.take(self.draw)]

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
