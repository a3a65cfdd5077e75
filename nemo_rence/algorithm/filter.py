"""Dynamic prompt filtering of ReNCE: Algorithm 1, lines 1-18, and eq. (3) of the ReNCE paper.

One call of :meth:`PromptFilter.next_batch` builds the training batch of one iteration::

    S <- []                                          # working stack
    while |S| < B:
        B~ <- Q if |Q| > 0 else D.batch();  Q <- []  # the prompt cache is consumed first
        for x in B~:                                 # (mastered prompts are never drawn again)
            G(x), R(x) <- K rollouts of x and their rewards
            rho(x) <- |P(x)| / |G(x)|
            if rho(x) > t_master: mark x mastered    # removed for good
            elif t_hard < rho(x) <= t_easy: S.append((x, G(x), R(x)))      # eq. (3)
    batch <- S[:B];  Q <- S[B:]                      # the surplus waits for the next iteration

The rollout+reward step is a callable, so the filter is tested without any model.

**What rho means.** The paper defines P(x) as the highest-reward rollouts and calls rho "the
ratio of positive trajectories"; its filter keeps "prompts with at least 50% incorrect
rollouts" and calls ``t_hard = 0, t_easy ~ 1`` zero-variance filtering. Read literally, a group in
which *every* rollout fails has P(x) = G(x) and rho = 1: it would be marked *mastered* and removed
for good, and eq. (3) with ``t_hard = 0`` could never reject anything as too hard. Both contradict
the text. We therefore define, with ``r_max``/``r_min`` the group's best/worst reward::

    rho(x) = |P(x)| / |G(x)|   if r_max >= solved_reward          (someone solved x)
           = |P(x)| / |G(x)|   if r_max > r_min and unsolved == "keep_if_contrast"
           = 0                 otherwise                          (nobody solved x: too hard)

With the paper's reward (1 / 0.1 / 0) and ``solved_reward = 1`` this is exactly the fraction of
correct rollouts, eq. (3) with ``t_hard = 0, t_easy = 0.99`` is zero-variance filtering, and only a
prompt that is actually solved can be mastered. ``unsolved = "keep_if_contrast"`` additionally
keeps unsolved groups that still contrast boxed against unboxed answers (a format signal useful
for small models); such groups are never marked mastered.

**The cache.** Algorithm 1 re-samples cached prompts with the current policy (line 8 runs for every
x in B~, including the cache): ``cache_reuse = "resample"`` (default, exact). ``"reuse"`` accepts
the cached groups as they are, saving their rollouts at the price of being one iteration
off-policy.

**Stopping a search.** ``next_batch(..., should_stop=f)`` asks ``f()`` before every draw but the
first of a call; when it says stop, the search raises :class:`SearchInterrupted` and keeps S and
its statistics (they are in :meth:`PromptFilter.state_dict`): the next call continues the same
search where it stopped, and returns exactly the batch and statistics an uninterrupted search
would have (the groups in S come from the same pi_old, which has not changed). The trainer uses
this to end a run on its time budget inside a long search without losing the rollouts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "DataExhaustedError",
    "FilterConfig",
    "FilterStarvedError",
    "FilterStats",
    "PromptFilter",
    "ScoredGroup",
    "SearchInterrupted",
    "positive_ratio",
]

UnsolvedPolicy = Literal["drop", "keep_if_contrast"]
CacheReuse = Literal["resample", "reuse"]


class DataExhaustedError(RuntimeError):
    """The prompt source has no more prompts to draw (or only mastered ones) before B passed."""


class FilterStarvedError(RuntimeError):
    """Too many draws without filling the batch: the filter is rejecting almost everything."""


class SearchInterrupted(Exception):
    """``should_stop()`` ended a search before B groups passed; the filter keeps what it found."""


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds and limits of Algorithm 1 (defaults: the ReNCE paper, section 3.2 / 4.1)."""

    batch_size: int = 512
    """B: prompts (groups) per training batch."""
    enabled: bool = True
    """False keeps every group, as plain GRPO does (no eq. (3), no mastery)."""
    t_hard: float = 0.0
    """Keep x only if t_hard < rho(x) (eq. 3). In [0, 1]."""
    t_easy: float = 0.5
    """Keep x only if rho(x) <= t_easy (eq. 3). 0.99 = zero-variance filtering (DAPO). In [0, 1]."""
    t_master: float | None = 0.8
    """rho(x) > t_master marks x mastered and removes it for good; None disables mastery."""
    solved_reward: float = 1.0
    """A group counts as solved when its best reward reaches this value (see module doc)."""
    unsolved: UnsolvedPolicy = "drop"
    """Unsolved groups: 'drop' (rho = 0) or 'keep_if_contrast' (rho = |P|/|G| if rewards differ)."""
    cache_reuse: CacheReuse = "resample"
    """'resample' cached prompts with the current policy (Algorithm 1) or 'reuse' their rollouts."""
    max_draws: int = 1000
    """Give up (FilterStarvedError) after this many source/cache draws within one batch."""

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"filter.batch_size must be an integer >= 1, got {self.batch_size!r}")
        for name in ("t_hard", "t_easy"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"filter.{name} must be in [0, 1], got {value!r}")
        if self.t_hard >= self.t_easy:
            raise ValueError(
                f"filter.t_hard ({self.t_hard}) must be < filter.t_easy ({self.t_easy}): "
                "eq. (3) keeps t_hard < rho <= t_easy"
            )
        if self.t_master is not None and not 0.0 <= self.t_master <= 1.0:
            raise ValueError(f"filter.t_master must be in [0, 1] or null, got {self.t_master!r}")
        if self.unsolved not in ("drop", "keep_if_contrast"):
            raise ValueError(
                f"filter.unsolved must be one of 'drop', 'keep_if_contrast', got {self.unsolved!r}"
            )
        if self.cache_reuse not in ("resample", "reuse"):
            raise ValueError(
                f"filter.cache_reuse must be one of 'resample', 'reuse', got {self.cache_reuse!r}"
            )
        if self.max_draws < 1:
            raise ValueError(f"filter.max_draws must be >= 1, got {self.max_draws!r}")


@dataclass
class ScoredGroup:
    """A prompt with its K rollouts and their rewards (one entry of the stack S)."""

    prompt_id: Hashable
    prompt: Any
    rewards: list[float]
    rollouts: Any = None
    """Whatever the rollout step produced (token ids, logprobs ...); opaque to the filter."""
    rho: float = math.nan


def positive_ratio(
    rewards: Sequence[float], solved_reward: float = 1.0, unsolved: UnsolvedPolicy = "drop"
) -> float:
    """rho(x) = |P(x)| / |G(x)| with P(x) = {y : r(x, y) = r_max(x)}, unsolved groups per module doc.

    >>> positive_ratio([1, 0.1, 0, 1])
    0.5
    >>> positive_ratio([0.1, 0.1, 0, 0])                      # nobody solved it: too hard
    0.0
    >>> positive_ratio([0.1, 0.1, 0, 0], unsolved="keep_if_contrast")
    0.5
    """
    if len(rewards) == 0:
        raise ValueError("a group needs at least one rollout")
    r_max, r_min = max(rewards), min(rewards)
    contrast = r_max > r_min
    if r_max >= solved_reward or (unsolved == "keep_if_contrast" and contrast):
        return sum(1 for r in rewards if r == r_max) / len(rewards)
    return 0.0


@dataclass
class FilterStats:
    """What one :meth:`PromptFilter.next_batch` cost and decided (metrics under ``filter/``)."""

    draws: int = 0
    prompts_from_source: int = 0
    prompts_from_cache: int = 0
    rollout_groups: int = 0
    rollouts: int = 0
    accepted: int = 0
    rejected_hard: int = 0
    rejected_easy: int = 0
    newly_mastered: int = 0
    mastered_total: int = 0
    cache_size: int = 0
    skipped_mastered: int = 0
    rho_values: list[float] = field(default_factory=list)

    def metrics(self, batch_size: int) -> dict[str, float]:
        seen = max(self.rollout_groups, 1)
        hist: dict[str, float] = {}
        for rho in self.rho_values:
            key = f"filter/rho_hist/{rho:.3f}"
            hist[key] = hist.get(key, 0.0) + 1
        return {
            "filter/draws": self.draws,
            "filter/prompts_from_source": self.prompts_from_source,
            "filter/cache_hits": self.prompts_from_cache,
            "filter/rollout_groups": self.rollout_groups,
            "filter/rollouts": self.rollouts,
            "filter/rollouts_per_accepted_prompt": self.rollouts / max(batch_size, 1),
            "filter/accept_rate": self.accepted / seen,
            "filter/reject_hard_rate": self.rejected_hard / seen,
            "filter/reject_easy_rate": self.rejected_easy / seen,
            "filter/newly_mastered": self.newly_mastered,
            "filter/mastered_total": self.mastered_total,
            "filter/cache_size": self.cache_size,
            "filter/rho_mean": sum(self.rho_values) / seen if self.rho_values else 0.0,
            **hist,
        }


RolloutFn = Callable[[list[Any]], list[ScoredGroup]]
"""Samples K rollouts for each prompt and rewards them: prompts -> groups, in the same order."""


class PromptFilter:
    """Algorithm 1, lines 1-18: oversample, filter by eq. (3), prune mastered prompts, cache surplus.

    Args:
        config: thresholds and limits.
        source: ``D.batch()``: returns the next list of prompts; an empty list means the source is
            exhausted. It may return mastered prompts; the filter skips them.
        prompt_id: maps a prompt to a hashable identity (the key of the mastered set).

    Deterministic given a deterministic source and rollout function; its state (cache Q,
    mastered set) round-trips through :meth:`state_dict` / :meth:`load_state_dict`.
    """

    def __init__(
        self,
        config: FilterConfig,
        source: Callable[[], Sequence[Any]],
        prompt_id: Callable[[Any], Hashable] = lambda p: p.id,
        to_plain: Callable[[ScoredGroup], dict[str, Any]] | None = None,
        from_plain: Callable[[dict[str, Any]], ScoredGroup] | None = None,
    ) -> None:
        """``to_plain`` / ``from_plain`` turn a group into plain containers for
        :meth:`state_dict` and back (default: its fields as they are)."""
        self.config = config
        self._source = source
        self._prompt_id = prompt_id
        self._to_plain = to_plain or _plain
        self._from_plain = from_plain or (lambda g: ScoredGroup(**g))
        self.cache: list[ScoredGroup] = []
        self.mastered: set[Hashable] = set()
        self.pending: tuple[list[ScoredGroup], FilterStats] | None = None
        """S and the statistics of a search that ``should_stop`` interrupted (module doc)."""
        self.search_rollouts = 0
        """The rollouts the search in progress has generated so far (an interrupted search's
        included once continued): what a rollout budget's ``should_stop`` counts."""

    # -- Algorithm 1 ------------------------------------------------------------------------
    def next_batch(
        self, rollout_fn: RolloutFn, should_stop: Callable[[], bool] | None = None
    ) -> tuple[list[ScoredGroup], FilterStats]:
        """Return the B groups of this iteration (Algorithm 1 lines 3-18) and what it cost.

        Args:
            rollout_fn: prompts -> scored groups (:data:`RolloutFn`).
            should_stop: asked before every draw but this call's first; True raises
                :class:`SearchInterrupted`, keeping the search for the next call (module doc).
        """
        cfg = self.config
        stack, stats = self.pending if self.pending is not None else ([], FilterStats())
        self.pending = None
        first = True
        while len(stack) < cfg.batch_size:
            self.search_rollouts = stats.rollouts
            if stats.draws >= cfg.max_draws:
                raise FilterStarvedError(self._starved_message(stats, len(stack)))
            if not first and should_stop is not None and should_stop():
                self.pending = (stack, stats)
                raise SearchInterrupted(
                    f"the batch search stopped after {stats.draws} draws ({stats.rollouts} "
                    f"rollouts) with {len(stack)} of {cfg.batch_size} groups accepted; "
                    "they are kept and the search continues on resume"
                )
            first = False
            stats.draws += 1
            if self.cache:  # lines 5-6: the cache is consumed first, and entirely
                cached, self.cache = self.cache, []
                stats.prompts_from_cache += len(cached)
                if cfg.cache_reuse == "reuse":
                    stack.extend(cached)
                    continue
                prompts = [g.prompt for g in cached]
            else:
                prompts = self._draw_from_source(stats)
            groups = rollout_fn(prompts)
            if len(groups) != len(prompts):
                raise ValueError(
                    f"rollout_fn returned {len(groups)} groups for {len(prompts)} prompts"
                )
            stats.rollout_groups += len(groups)
            for group in groups:  # lines 7-15
                stats.rollouts += len(group.rewards)
                stack.extend(self._decide(group, stats))
        batch, self.cache = stack[: cfg.batch_size], stack[cfg.batch_size :]  # lines 17-18
        stats.cache_size = len(self.cache)
        stats.mastered_total = len(self.mastered)
        return batch, stats

    def _decide(self, group: ScoredGroup, stats: FilterStats) -> list[ScoredGroup]:
        cfg = self.config
        rho = positive_ratio(group.rewards, cfg.solved_reward, cfg.unsolved)
        group.rho = rho
        stats.rho_values.append(rho)
        if not cfg.enabled:
            stats.accepted += 1
            return [group]
        solved = max(group.rewards) >= cfg.solved_reward
        if cfg.t_master is not None and solved and rho > cfg.t_master:  # lines 10-11
            self.mastered.add(group.prompt_id)
            stats.newly_mastered += 1
            return []
        if cfg.t_hard < rho <= cfg.t_easy:  # line 12, eq. (3)
            stats.accepted += 1
            return [group]
        if rho <= cfg.t_hard:
            stats.rejected_hard += 1
        else:
            stats.rejected_easy += 1
        return []

    def _draw_from_source(self, stats: FilterStats) -> list[Any]:
        """D.batch() minus mastered prompts; raises DataExhaustedError when nothing is left."""
        for _ in range(self.config.max_draws):
            drawn = list(self._source())
            if not drawn:
                raise DataExhaustedError(
                    "the prompt source is exhausted: no prompts left to draw "
                    f"({len(self.mastered)} mastered, {stats.prompts_from_source} drawn this "
                    "batch). Use a larger dataset, more epochs, or a smaller filter.batch_size."
                )
            fresh = [p for p in drawn if self._prompt_id(p) not in self.mastered]
            stats.skipped_mastered += len(drawn) - len(fresh)
            if fresh:
                stats.prompts_from_source += len(fresh)
                return fresh
        raise DataExhaustedError(
            f"the prompt source returned only mastered prompts for {self.config.max_draws} draws "
            f"in a row ({len(self.mastered)} mastered): every prompt has been learned."
        )

    def _starved_message(self, stats: FilterStats, have: int) -> str:
        seen = max(stats.rollout_groups, 1)
        return (
            f"prompt filter gave up after {stats.draws} draws with {have}/"
            f"{self.config.batch_size} prompts accepted: of {stats.rollout_groups} groups, "
            f"{stats.rejected_hard / seen:.0%} were too hard (rho <= t_hard={self.config.t_hard}), "
            f"{stats.rejected_easy / seen:.0%} too easy (rho > t_easy={self.config.t_easy}), "
            f"{stats.newly_mastered} mastered. Loosen filter.t_easy / filter.t_hard, raise "
            "filter.max_draws, or lower filter.batch_size."
        )

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Cache Q, the mastered set and an interrupted search, as plain Python containers."""
        pending = None
        if self.pending is not None:
            stack, stats = self.pending
            pending = {"groups": [self._to_plain(g) for g in stack], "stats": asdict(stats)}
        return {
            "cache": [self._to_plain(g) for g in self.cache],
            "mastered": sorted(self.mastered, key=repr),
            "pending": pending,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cache = [self._from_plain(g) for g in state["cache"]]
        self.mastered = set(state["mastered"])
        pending = state.get("pending")  # absent in checkpoints written before it existed
        self.pending = (
            None
            if pending is None
            else (
                [self._from_plain(g) for g in pending["groups"]],
                FilterStats(**pending["stats"]),
            )
        )


def _plain(group: ScoredGroup) -> dict[str, Any]:
    return {
        "prompt_id": group.prompt_id,
        "prompt": group.prompt,
        "rewards": list(group.rewards),
        "rollouts": group.rollouts,
        "rho": group.rho,
    }
