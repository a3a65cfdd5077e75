"""The generation contract every rollout engine implements (DESIGN.md, "Contracts").

Worked example — 2 prompts, ``SamplingParams(n=3)``: ``generate`` returns 6 rollouts, grouped by
prompt, rollout ``j`` of prompt ``i`` at row ``i * n + j``::

    rollouts.prompt_index  == [0, 0, 0, 1, 1, 1]
    rollouts.token_ids[4]  == [791, 4320, 374, 220, 19, 2]      # response tokens only, eos included
    rollouts.logprobs[4]   == [-0.41, -1.9, -0.02, -0.3, -0.7, -0.01]   # one per response token
    rollouts.finish_reason == ["eos", "length", "eos", "stop", "eos", "eos"]

``logprobs[i][t]`` is ``log softmax(logits / temperature)[token]`` over the FULL vocabulary
(before top-k / top-p truncation): exactly what the policy computes for the same token at the same
temperature, so the two can be compared to verify a refit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

__all__ = ["FINISH_REASONS", "GenerationEngine", "Rollouts", "SamplingParams"]

FINISH_REASONS = ("eos", "stop", "length")


@dataclass(frozen=True)
class SamplingParams:
    """How to sample the K rollouts of each prompt."""

    n: int = 8
    """K: rollouts per prompt."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]."""
    top_k: int = 0
    """Sample among the k most likely tokens; 0 disables."""
    max_new_tokens: int = 256
    """Response length limit (finish reason 'length')."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end a response (besides the engine's eos ids); kept in the response."""
    stop_strings: tuple[str, ...] = ()
    """Strings that end a response once decoded (finish reason 'stop'); kept in the response."""
    seed: int | None = None
    """Seed of the sampling generator: same prompts + seed + weights give the same rollouts."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"sampling.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"sampling.top_k must be >= 0, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"sampling.max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Rollouts:
    """The rollouts of a batch of prompts, grouped by prompt (see the module docstring)."""

    prompt_index: list[int] = field(default_factory=list)
    token_ids: list[list[int]] = field(default_factory=list)
    logprobs: list[list[float]] = field(default_factory=list)
    finish_reason: list[str] = field(default_factory=list)
    weight_version: int = 0

    @property
    def lengths(self) -> list[int]:
        return [len(t) for t in self.token_ids]

    def __len__(self) -> int:
        return len(self.token_ids)


@runtime_checkable
class GenerationEngine(Protocol):
    """Generates grouped rollouts and takes new weights in place, every iteration."""

    @property
    def version(self) -> int:
        """Version of the weights the engine currently samples from."""
        ...

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Rollouts:
        """Sample ``params.n`` responses for each prompt (token ids, no padding)."""
        ...

    def update_weights(
        self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int
    ) -> int:
        """Copy HF-named tensors into the live model; return the number of bytes moved."""
        ...
