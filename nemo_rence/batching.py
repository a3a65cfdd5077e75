"""Data munging between the stages: engine rollouts -> scored groups -> policy batches.

Layout of a :class:`~nemo_rence.policy.interface.PolicyBatch` built from B groups of K rollouts
(group ``g`` = rows ``g*K .. g*K+K-1``, right-padded prompt + response, see its docstring)::

    input_ids         [B*K, L]   prompt then response tokens, 0-padded
    prompt_lengths    [B*K]
    response_lengths  [B*K]
    group_ids         [B*K]      g
    extras.rewards              [B*K]     float32
    extras.engine_logprobs      [B*K, T]  the engine's sampling logprobs (0 on padding)
    extras.engine_version       [B*K]     weight version that generated each rollout
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from nemo_rence.algorithm.filter import ScoredGroup
from nemo_rence.policy.interface import PolicyBatch, RowData
from nemo_rence.rollout.interface import Rollouts
from nemo_rence.types import GroupRollouts

__all__ = ["groups_to_policy_batch", "mini_batches", "rollouts_to_groups", "select_groups"]


def rollouts_to_groups(
    prompts: Sequence[Any],
    prompt_ids: Sequence[Sequence[int]],
    rollouts: Rollouts,
    results: Sequence[Any],
) -> list[ScoredGroup]:
    """One :class:`ScoredGroup` per prompt, its rollouts in engine order (rows i*K .. i*K+K-1)."""
    rows: list[list[int]] = [[] for _ in prompts]
    for row, i in enumerate(rollouts.prompt_index):
        rows[i].append(row)
    groups = []
    for i, prompt in enumerate(prompts):
        rs = rows[i]
        groups.append(
            ScoredGroup(
                prompt_id=prompt.id,
                prompt=prompt,
                rewards=[float(results[r].reward) for r in rs],
                rollouts=GroupRollouts(
                    prompt_ids=list(prompt_ids[i]),
                    token_ids=[rollouts.token_ids[r] for r in rs],
                    logprobs=[rollouts.logprobs[r] for r in rs],
                    finish_reason=[rollouts.finish_reason[r] for r in rs],
                    version=rollouts.weight_version,
                ),
            )
        )
    return groups


def groups_to_policy_batch(groups: Sequence[ScoredGroup]) -> PolicyBatch:
    """Pack groups into one right-padded :class:`PolicyBatch` (layout in the module docstring)."""
    seqs, plens, rlens, gids, rewards, eng_lp, versions = [], [], [], [], [], [], []
    for g, group in enumerate(groups):
        ro: GroupRollouts = group.rollouts
        for toks, lps, reward in zip(ro.token_ids, ro.logprobs, group.rewards, strict=True):
            seqs.append(list(ro.prompt_ids) + list(toks))
            plens.append(len(ro.prompt_ids))
            rlens.append(len(toks))
            gids.append(g)
            rewards.append(reward)
            eng_lp.append(lps)
            versions.append(ro.version)
    n, length, width = len(seqs), max(map(len, seqs)), max(max(rlens), 1)
    input_ids = torch.zeros((n, length), dtype=torch.long)
    engine = torch.zeros((n, width), dtype=torch.float32)
    for i, (s, lp) in enumerate(zip(seqs, eng_lp, strict=True)):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        engine[i, : len(lp)] = torch.tensor(lp, dtype=torch.float32)
    return PolicyBatch(
        input_ids=input_ids,
        prompt_lengths=torch.tensor(plens, dtype=torch.long),
        response_lengths=torch.tensor(rlens, dtype=torch.long),
        group_ids=torch.tensor(gids, dtype=torch.long),
        extras=RowData(
            rewards=torch.tensor(rewards, dtype=torch.float32),
            engine_logprobs=engine,
            engine_version=torch.tensor(versions, dtype=torch.long),
        ),
        response_width=width,
    )


def select_groups(batch: PolicyBatch, group_values: Sequence[int]) -> PolicyBatch:
    """The rows of ``batch`` whose group id is in ``group_values`` (same response width)."""
    wanted = torch.tensor(sorted(group_values), dtype=torch.long)
    rows = torch.isin(batch.group_ids, wanted).nonzero().squeeze(-1)
    return PolicyBatch(
        input_ids=batch.input_ids[rows],
        prompt_lengths=batch.prompt_lengths[rows],
        response_lengths=batch.response_lengths[rows],
        group_ids=batch.group_ids[rows],
        extras=batch.extras.select(rows),
        response_width=batch.width,
    )


def mini_batches(
    batch: PolicyBatch, groups_per_step: int, n_update: int, rng: random.Random
) -> Iterator[PolicyBatch]:
    """``n_update`` mini-batches of ``groups_per_step`` whole groups (Algorithm 1 lines 19-21).

    Groups are shuffled once per pass over the batch; with B groups and mini-batch M, every
    ceil(B/M) consecutive steps see each group once (paper: B=512, M=32, n_update=16 = one pass).
    """
    group_values = sorted(set(batch.group_ids.tolist()))
    order: list[int] = []
    for _ in range(n_update):
        if len(order) < groups_per_step:  # a new pass; a short remainder is dropped
            order = list(group_values)
            rng.shuffle(order)
        step, order = order[:groups_per_step], order[groups_per_step:]
        yield select_groups(batch, step)
