"""The typed hand-offs between the stages of an iteration (rollout -> filter -> score -> update).

::

    PromptRecord --rollout stage--> ScoredGroup(prompt, rewards [K], rollouts: GroupRollouts)
                 --filter--> B accepted groups --batching--> PolicyBatch (rows = rollouts)

:class:`~nemo_rence.algorithm.filter.ScoredGroup` is the filter's own type (it treats the rollouts
as opaque); :class:`GroupRollouts` is what the rollout stage puts there and what batching reads.
:func:`group_to_plain` / :func:`group_from_plain` turn a group into plain containers for
checkpoints (``torch.load(weights_only=True)``) and back; the filter serialises its cache and an
interrupted search with them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nemo_rence.algorithm.filter import ScoredGroup
from nemo_rence.data.records import PromptRecord

__all__ = ["GroupRollouts", "group_from_plain", "group_to_plain"]


@dataclass
class GroupRollouts:
    """The K rollouts of one prompt as the engine produced them.

    Attributes:
        prompt_ids: the prompt's token ids (template and chat template applied).
        token_ids: [K] response token ids (eos included when generated).
        logprobs: [K] per-token sampling logprobs, one per response token.
        finish_reason: [K] 'eos' | 'stop' | 'length'.
        version: the engine's weight version that generated them.
    """

    prompt_ids: list[int]
    token_ids: list[list[int]]
    logprobs: list[list[float]]
    finish_reason: list[str]
    version: int


def group_to_plain(group: ScoredGroup) -> dict[str, Any]:
    """A scored group as plain containers (prompt record and rollouts as dicts)."""
    return {
        "prompt_id": group.prompt_id,
        "prompt": dataclasses.asdict(group.prompt),
        "rewards": list(group.rewards),
        "rollouts": dataclasses.asdict(group.rollouts) if group.rollouts is not None else None,
        "rho": group.rho,
    }


def group_from_plain(plain: dict[str, Any]) -> ScoredGroup:
    """Inverse of :func:`group_to_plain`."""
    rollouts = plain.get("rollouts")
    return ScoredGroup(
        prompt_id=plain["prompt_id"],
        prompt=PromptRecord(**plain["prompt"]),
        rewards=list(plain["rewards"]),
        rollouts=GroupRollouts(**rollouts) if rollouts is not None else None,
        rho=plain["rho"],
    )
