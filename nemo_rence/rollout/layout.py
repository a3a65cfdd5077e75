"""Which ranks host a rollout engine, and with what tensor parallelism (pure: no torch).

One function, :func:`engine_layout`, decides it; ``build.py`` builds exactly these engines and
``nemo-rence plan`` budgets exactly these (``tests/unit/plan/test_engine_layout.py`` checks the
two agree for every recipe). Megatron numbers the ranks of a ``tp x pp x dp`` world tensor-parallel
first, then data-parallel, then pipeline (``rank = t + tp (d + dp p)``)::

    in-process engine ('hf'):  one engine per model replica (DP rank), on its first rank
                               (t = 0, p = 0): hosts = [d * tp for d in range(dp)], engine TP 1.
                               Every rank of the replica receives the full weights in the refit
                               (the export gathers TP/PP), the host loads them.
    own-process engines ('vllm', 'trtllm'):  one engine per ``rollout.tensor_parallel`` ranks,
                               on the first of them, spanning their GPUs:
                               hosts = [0, T, 2T, ...], engine TP = T (independent of the
                               policy's TP/PP: the refit hands over full HF tensors).

Examples (world 8): hf, policy TP 2 -> hosts [0, 2, 4, 6], 4 engines of TP 1; trtllm with
``rollout.tensor_parallel=8`` -> hosts [0], 1 engine of TP 8 (a 70B model: 140 GB of bf16 weights
spread over 8 GPUs); vllm with TP 1 -> an engine on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass

from nemo_rence.errors import ConfigError

__all__ = [
    "IN_PROCESS_ENGINES",
    "EngineLayout",
    "engine_layout",
    "engine_layout_of_config",
    "engine_tp_of",
]

IN_PROCESS_ENGINES = frozenset({"hf"})
"""Engines that run inside the trainer's process (TP 1, one per model replica)."""


@dataclass(frozen=True)
class EngineLayout:
    """The rollout engines of a run: their host ranks, in replica order, and their TP size."""

    world_size: int
    engine_tp: int
    hosts: tuple[int, ...]

    @property
    def replicas(self) -> int:
        """Number of engines (replicas that each generate a share of every draw)."""
        return len(self.hosts)

    def replica_of(self, rank: int) -> int | None:
        """The replica index of the engine ``rank`` hosts; None when it hosts none."""
        return self.hosts.index(rank) if rank in self.hosts else None

    def engines_per_node(self, ranks_per_node: int) -> int:
        """Engines whose host is on the first node (the same on every node)."""
        return sum(1 for h in self.hosts if h < ranks_per_node)

    @classmethod
    def single(cls, world_size: int = 1) -> EngineLayout:
        """One TP-1 engine on rank 0 (tests and a trainer built by hand)."""
        return cls(world_size=world_size, engine_tp=1, hosts=(0,))


def engine_tp_of(engine: str, rollout_tp: int) -> int:
    """The TP size of each engine: 1 in process ('hf'), else ``rollout.tensor_parallel``."""
    return 1 if engine in IN_PROCESS_ENGINES else rollout_tp


def engine_layout(
    world_size: int, *, policy_tp: int, policy_pp: int, engine: str, engine_tp: int
) -> EngineLayout:
    """The engines of a ``world_size``-rank run (see the module docstring).

    Raises:
        ConfigError: ``rollout.tensor_parallel`` does not divide the world size, or
            ``policy.tensor_parallel x policy.pipeline_parallel`` does not.
    """
    if world_size % (policy_tp * policy_pp):
        raise ConfigError(
            f"policy.tensor_parallel={policy_tp} x policy.pipeline_parallel={policy_pp} does not "
            f"divide the world size {world_size}"
        )
    if engine in IN_PROCESS_ENGINES:
        dp = world_size // (policy_tp * policy_pp)
        return EngineLayout(world_size, 1, tuple(d * policy_tp for d in range(dp)))
    engine_tp = engine_tp_of(engine, engine_tp)
    if engine_tp < 1 or world_size % engine_tp:
        allowed = [d for d in range(1, world_size + 1) if world_size % d == 0]
        raise ConfigError(
            f"rollout.tensor_parallel={engine_tp} does not divide the world size {world_size}: "
            f"each engine spans rollout.tensor_parallel ranks; allowed values: {allowed}"
        )
    return EngineLayout(world_size, engine_tp, tuple(range(0, world_size, engine_tp)))


def engine_layout_of_config(cfg: object, world_size: int) -> EngineLayout:
    """:func:`engine_layout` of a :class:`~nemo_rence.config.TrainConfig` on ``world_size`` ranks."""
    policy, rollout = cfg.policy, cfg.rollout  # type: ignore[attr-defined]
    return engine_layout(
        world_size,
        policy_tp=policy.tensor_parallel,
        policy_pp=policy.pipeline_parallel,
        engine=rollout.engine,
        engine_tp=rollout.tensor_parallel,
    )
