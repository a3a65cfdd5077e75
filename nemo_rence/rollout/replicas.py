"""Rollouts on every engine replica: one draw of the batch search, split, generated, gathered.

Rank 0 runs the filter's batch search (Algorithm 1 lines 3-18) as before; each call of its
rollout function is one *draw* (a list of prompts). With several engines
(:class:`~nemo_rence.rollout.layout.EngineLayout`) a draw goes::

    rank 0: Draw(prompts, prompt ids, sampling params, per-prompt seeds) --broadcast--> all ranks
    replica j (host rank h_j): prompts [j P / R, (j + 1) P / R)  -> generate + grade its share
    every rank --gather_object--> rank 0: the shares, concatenated in replica order = prompt order

so rank 0's filter sees the groups of the draw in prompt order and decides exactly as with one
engine (same prompts, same decisions). When the search ends rank 0 broadcasts ``None`` and the
other ranks leave their serving loop. With one engine nothing is sent: rank 0 generates alone,
exactly as before.

**Seeds.** ``rollout.seed_mode=per_call`` (default, the golden run): the draw's one seed, drawn
from the trainer's sampling stream, seeds each replica's call; a prompt's rollouts then depend on
which prompts share its call, so they change with the number of replicas. ``per_prompt``: prompt
x of a draw with seed s gets :func:`prompt_seed` ``(s, id(x))``; the number of replicas changes
neither the seeds nor (with an engine that samples each prompt from its own generator) the
rollouts.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nemo_rence.rollout.interface import GenerationEngine, Rollouts, SamplingParams
from nemo_rence.rollout.layout import EngineLayout

__all__ = [
    "Draw",
    "ReplicaPool",
    "SeededEngine",
    "generate_seeded",
    "prompt_seed",
    "prompt_seeds",
    "share_bounds",
]


def prompt_seed(call_seed: int, prompt_id: Hashable) -> int:
    """A 31-bit seed for ``prompt_id`` in a draw seeded ``call_seed`` (blake2b of both):
    independent of the prompt's position in the draw and of the number of replicas."""
    digest = hashlib.blake2b(f"{call_seed}:{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def prompt_seeds(call_seed: int, prompt_ids: Iterable[Hashable]) -> list[int]:
    return [prompt_seed(call_seed, p) for p in prompt_ids]


def share_bounds(n_prompts: int, replicas: int, replica: int) -> tuple[int, int]:
    """Replica ``replica``'s contiguous share [lo, hi) of a draw of ``n_prompts`` prompts:
    ``lo = replica * n // R``; shares differ by at most one prompt and cover the draw in order."""
    return replica * n_prompts // replicas, (replica + 1) * n_prompts // replicas


def generate_seeded(
    engine: GenerationEngine,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    seeds: Sequence[int] | None,
) -> Rollouts:
    """``engine.generate`` with one seed per prompt: in one call where the engine samples each
    prompt from its own generator (``per_prompt_seeds``, the hf engine), else one call per
    prompt with ``params.seed = seeds[i]`` (the rows renumbered into one :class:`Rollouts`)."""
    if seeds is None:
        return engine.generate(prompts, params)
    if getattr(engine, "per_prompt_seeds", False):
        return engine.generate(prompts, params, seeds=seeds)  # type: ignore[call-arg]
    merged = Rollouts()
    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        out = engine.generate([prompt], dataclasses.replace(params, seed=int(seed)))
        merged.prompt_index += [i] * len(out)
        merged.token_ids += out.token_ids
        merged.logprobs += out.logprobs
        merged.finish_reason += out.finish_reason
        merged.weight_version = out.weight_version
    return merged


class SeededEngine:
    """An engine whose ``generate`` uses fixed per-prompt seeds (for ``generate_and_grade``)."""

    def __init__(self, engine: GenerationEngine, seeds: Sequence[int] | None) -> None:
        self.engine = engine
        self.seeds = seeds

    @property
    def version(self) -> int:
        return self.engine.version

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Rollouts:
        return generate_seeded(self.engine, prompts, params, self.seeds)

    def update_weights(
        self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int
    ) -> int:
        return self.engine.update_weights(named_tensors, version)


@dataclass
class Draw:
    """One call of the filter's rollout function: what every replica needs to generate a share.

    Attributes:
        prompts: [P] the prompt records (their answers grade the responses).
        prompt_ids: [P] their token ids.
        params: the draw's sampling parameters (``params.seed``: the draw's seed).
        seeds: [P] per-prompt seeds, or None (``seed_mode=per_call``).
    """

    prompts: list[Any]
    prompt_ids: list[list[int]]
    params: SamplingParams
    seeds: list[int] | None = None

    def share(self, replicas: int, replica: int) -> Draw:
        lo, hi = share_bounds(len(self.prompts), replicas, replica)
        return Draw(
            self.prompts[lo:hi],
            self.prompt_ids[lo:hi],
            self.params,
            None if self.seeds is None else self.seeds[lo:hi],
        )


Generate = Callable[[Draw], list[Any]]
"""A host's generate-and-grade of a (share of a) draw: one result (group) per prompt, in order."""


class ReplicaPool:
    """Splits draws over the engine replicas (rank 0) and serves them (every other rank).

    Args:
        layout: the run's engines.
        rank: this process's global rank.
    """

    def __init__(self, layout: EngineLayout, rank: int = 0) -> None:
        self.layout = layout
        self.rank = rank
        self.rollouts = [0] * layout.replicas
        """Rollouts each replica generated since :meth:`reset_counts`."""

    @property
    def distributed(self) -> bool:
        return self.layout.replicas > 1

    def run(self, draw: Draw, generate: Generate) -> list[Any]:
        """Rank 0: every replica generates its share of ``draw``; the groups in prompt order."""
        n = self.layout.replicas
        if not self.distributed:
            groups = generate(draw)
            self._count(0, draw)
            return groups
        _broadcast(draw)
        shares = _gather(generate(draw.share(n, 0)))
        out: list[Any] = []
        for j, host in enumerate(self.layout.hosts):
            share = shares[host]
            expected = draw.share(n, j)
            if share is None or len(share) != len(expected.prompts):
                raise RuntimeError(f"replica {j} (rank {host}) returned no share of the draw")
            out.extend(share)
            self._count(j, expected)
        return out

    def serve(self, generate: Generate) -> None:
        """Every rank but 0: generate this rank's share of each draw until rank 0 says done."""
        if not self.distributed:
            return
        replica = self.layout.replica_of(self.rank)
        while True:
            draw = _broadcast(None)
            if draw is None:
                return
            share = None if replica is None else generate(draw.share(self.layout.replicas, replica))
            _gather(share)

    def finish(self) -> None:
        """Rank 0: the search is over (the other ranks leave :meth:`serve`)."""
        if self.distributed:
            _broadcast(None)

    def reset_counts(self) -> None:
        self.rollouts = [0] * self.layout.replicas

    def metrics(self) -> dict[str, float]:
        """``rollout/replicas`` and each replica's share of the rollouts generated (empty with
        one engine: the single-engine run logs what it always did)."""
        if not self.distributed:
            return {}
        total = max(sum(self.rollouts), 1)
        out = {"rollout/replicas": float(self.layout.replicas)}
        out.update({f"rollout/replica{j}_share": c / total for j, c in enumerate(self.rollouts)})
        return out

    def _count(self, replica: int, draw: Draw) -> None:
        self.rollouts[replica] += len(draw.prompts) * draw.params.n


def _broadcast(obj: Any) -> Any:
    from nemo_rence.infra.distributed import broadcast_object

    return broadcast_object(obj)


def _gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on rank 0 (rank-indexed); an empty list elsewhere."""
    import torch.distributed as dist

    world = dist.get_world_size()
    box: list[Any] | None = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(obj, box, dst=0)
    return box or []
