"""Resumable prompt sampling: a fresh permutation per epoch, position and RNG in a state_dict.

``state_dict()`` holds the epoch, the position inside the epoch's permutation, the seed and the
RNG state the permutation was drawn from, so a restored sampler continues with exactly the items
an uninterrupted one would have produced.

Example::

    s = PromptSampler(num_items=5, seed=0)
    first = s.take(3)
    state = s.state_dict()
    rest = s.take(4)                       # crosses into epoch 1 with a new permutation
    t = PromptSampler(num_items=5, seed=123)
    t.load_state_dict(state)
    assert t.take(4) == rest
"""

from __future__ import annotations

import random
from typing import Any


class PromptSampler:
    """Yields item indices ``0..num_items-1``: each epoch a new shuffle (or in order)."""

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._rng = random.Random(seed)
        self._epoch_rng_state: Any = self._rng.getstate()
        self._order = self._draw()

    def _draw(self) -> list[int]:
        """The current epoch's order, drawn from the RNG (whose pre-draw state is kept)."""
        self._epoch_rng_state = self._rng.getstate()
        order = list(range(self.num_items))
        if self.shuffle:
            self._rng.shuffle(order)
        return order

    def next_index(self) -> int:
        """The next item index (starting a new epoch when the current one is used up)."""
        if self.position >= self.num_items:
            self.epoch += 1
            self.position = 0
            self._order = self._draw()
        idx = self._order[self.position]
        self.position += 1
        return idx

    def take(self, n: int) -> list[int]:
        """The next ``n`` indices."""
        return [self.next_index() for _ in range(n)]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: epoch, position, seed, shuffle, RNG state."""
        version, internal, gauss = self._epoch_rng_state
        return {
            "num_items": self.num_items,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": self.epoch,
            "position": self.position,
            "rng_state": [version, list(internal), gauss],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (the dataset size must match)."""
        if state["num_items"] != self.num_items:
            raise ValueError(
                f"sampler state is for {state['num_items']} items but this dataset has "
                f"{self.num_items}: resume with the same data"
            )
        self.seed = state["seed"]
        self.shuffle = state["shuffle"]
        self.epoch = state["epoch"]
        self.position = state["position"]
        version, internal, gauss = state["rng_state"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._order = self._draw()
