"""Algorithm 1 (lines 1-18) and eq. (3) of the ReNCE paper: the dynamic prompt filter."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import pytest

from nemo_rence.algorithm.filter import (
    DataExhaustedError,
    FilterConfig,
    FilterStarvedError,
    PromptFilter,
    ScoredGroup,
    SearchInterrupted,
    positive_ratio,
)

K = 8


@dataclass(frozen=True)
class Prompt:
    id: str
    p_correct: float


class Source:
    """D.batch(): draws ``size`` prompts at a time, cycling for ``epochs`` epochs (None = forever)."""

    def __init__(self, prompts, size, epochs=None):
        self.prompts, self.size, self.epochs = list(prompts), size, epochs
        self.pos, self.calls = 0, 0

    def __call__(self):
        self.calls += 1
        out = []
        while len(out) < self.size:
            if self.epochs is not None and self.pos >= self.epochs * len(self.prompts):
                break
            out.append(self.prompts[self.pos % len(self.prompts)])
            self.pos += 1
        return out


class Roller:
    """K rollouts per prompt: each correct (reward 1) with the prompt's p, else boxed-wrong 0.1."""

    def __init__(self, seed=0):
        self.rng = random.Random(seed)
        self.seen: list[str] = []

    def __call__(self, prompts):
        self.seen.extend(p.id for p in prompts)
        return [
            ScoredGroup(
                prompt_id=p.id,
                prompt=p,
                rewards=[1.0 if self.rng.random() < p.p_correct else 0.1 for _ in range(K)],
            )
            for p in prompts
        ]


def scripted(n_correct: dict[str, int]):
    """A rollout function whose group for prompt id has exactly n_correct[id] correct rollouts."""

    def roll(prompts):
        return [
            ScoredGroup(p.id, p, [1.0] * n_correct[p.id] + [0.0] * (K - n_correct[p.id]))
            for p in prompts
        ]

    return roll


def test_positive_ratio_is_the_fraction_of_correct_rollouts_with_the_paper_reward():
    assert positive_ratio([1, 1, 0.1, 0, 0.1, 0, 0, 0]) == 0.25
    assert positive_ratio([1] * 8) == 1.0
    assert positive_ratio([0.1] * 3 + [0] * 5) == 0.0
    assert positive_ratio([0.1] * 8) == 0.0
    assert positive_ratio([0.1] * 3 + [0] * 5, unsolved="keep_if_contrast") == 3 / 8
    with pytest.raises(ValueError):
        positive_ratio([])


def test_eq3_keeps_only_groups_with_t_hard_below_rho_at_most_t_easy():
    prompts = [Prompt(f"p{i}", 0) for i in range(9)]
    counts = {f"p{i}": i for i in range(9)}  # rho = i/8
    f = PromptFilter(FilterConfig(batch_size=3, t_master=None), Source(prompts, 9, epochs=1))
    batch, stats = f.next_batch(scripted(counts))
    kept = [g.prompt_id for g in batch + f.cache]
    assert kept == ["p1", "p2", "p3", "p4"]  # 0 < i/8 <= 0.5
    assert stats.rejected_hard == 1 and stats.rejected_easy == 4
    assert [g.rho for g in batch] == [1 / 8, 2 / 8, 3 / 8]


def test_all_failed_prompt_is_rejected_as_too_hard_and_never_marked_mastered():
    f = PromptFilter(FilterConfig(batch_size=1, max_draws=3), Source([Prompt("a", 0)], 1))
    with pytest.raises(FilterStarvedError, match="too hard"):
        f.next_batch(scripted({"a": 0}))
    assert f.mastered == set()


def test_mastered_prompt_is_never_sampled_again():
    prompts = [Prompt("easy", 1.0)] + [Prompt(f"h{i}", 0.3) for i in range(6)]
    src = Source(prompts, size=4)
    roller = Roller(seed=1)
    f = PromptFilter(FilterConfig(batch_size=2, t_master=0.8, max_draws=10_000), src)
    f.next_batch(roller)
    assert "easy" in f.mastered
    first_seen = len(roller.seen)
    for _ in range(20):
        f.next_batch(roller)
    assert "easy" not in roller.seen[first_seen:]
    assert roller.seen.count("easy") == 1


def test_cache_is_consumed_before_new_draws_and_surplus_becomes_the_cache():
    prompts = [Prompt(f"p{i}", 0) for i in range(8)]
    src = Source(prompts, size=5)
    calls: list[list[str]] = []
    roll = scripted({p.id: 2 for p in prompts})

    def recording(batch_prompts):
        calls.append([p.id for p in batch_prompts])
        return roll(batch_prompts)

    f = PromptFilter(FilterConfig(batch_size=3), src)
    batch, stats = f.next_batch(recording)
    assert [g.prompt_id for g in batch] == ["p0", "p1", "p2"]
    assert [g.prompt_id for g in f.cache] == ["p3", "p4"]
    assert src.calls == 1 and stats.cache_size == 2
    batch, stats = f.next_batch(recording)
    # Algorithm 1 line 5: the whole cache is re-rolled first, then the source is drawn.
    assert calls[1] == ["p3", "p4"] and calls[2] == ["p5", "p6", "p7", "p0", "p1"]
    assert [g.prompt_id for g in batch] == ["p3", "p4", "p5"]
    assert stats.prompts_from_cache == 2 and src.calls == 2


def test_cache_reuse_accepts_cached_groups_without_new_rollouts():
    prompts = [Prompt(f"p{i}", 0) for i in range(6)]
    calls = []
    roll = scripted({p.id: 2 for p in prompts})
    f = PromptFilter(FilterConfig(batch_size=2, cache_reuse="reuse"), Source(prompts, size=6))
    f.next_batch(lambda ps: calls.append(len(ps)) or roll(ps))
    batch, stats = f.next_batch(lambda ps: calls.append(len(ps)) or roll(ps))
    assert calls == [6] and [g.prompt_id for g in batch] == ["p2", "p3"]
    assert stats.rollouts == 0 and stats.prompts_from_cache == 4


@pytest.mark.parametrize("batch_size", [1, 5, 16])
def test_batch_has_exactly_b_groups(batch_size):
    prompts = [Prompt(f"p{i}", p) for i, p in enumerate([0.1, 0.3, 0.5, 0.7, 0.9] * 8)]
    f = PromptFilter(FilterConfig(batch_size=batch_size, max_draws=10_000), Source(prompts, size=7))
    roller = Roller(seed=3)
    for _ in range(4):
        batch, stats = f.next_batch(roller)
        assert len(batch) == batch_size
        assert all(0 < g.rho <= 0.5 for g in batch)
        assert stats.rollouts == K * stats.rollout_groups
        m = stats.metrics(batch_size)
        assert m["filter/rollouts_per_accepted_prompt"] == stats.rollouts / batch_size
        assert 0 < m["filter/accept_rate"] <= 1


def test_state_dict_round_trip_reproduces_the_same_future_decisions():
    prompts = [Prompt(f"p{i}", p) for i, p in enumerate([0.05, 0.3, 0.6, 0.95] * 5)]
    cfg = FilterConfig(batch_size=3, max_draws=10_000)
    src, roller = Source(prompts, size=4), Roller(seed=7)
    f = PromptFilter(cfg, src)
    for _ in range(2):
        f.next_batch(roller)
    state = copy.deepcopy(f.state_dict())
    src_state, rng_state = (src.pos, src.calls), roller.rng.getstate()

    def run(filt, roll):
        out = []
        for _ in range(3):
            batch, stats = filt.next_batch(roll)
            out.append(([g.prompt_id for g in batch], sorted(filt.mastered), stats.metrics(3)))
        return out

    expected = run(f, roller)
    src2 = Source(prompts, size=4)
    src2.pos, src2.calls = src_state
    roller2 = Roller()
    roller2.rng.setstate(rng_state)
    f2 = PromptFilter(cfg, src2)
    f2.load_state_dict(state)
    assert run(f2, roller2) == expected


def _stop_after(n_calls: int):
    """should_stop that says stop on its n-th call (before draw n + 1 of a call)."""
    calls = [0]

    def should_stop():
        calls[0] += 1
        return calls[0] >= n_calls

    return should_stop


def _batches(filt, roll, n, should_stop=None):
    """n batches as comparable rows; an interrupted search is resumed through a state dict."""
    out = []
    while len(out) < n:
        try:
            batch, stats = filt.next_batch(roll, should_stop)
        except SearchInterrupted:
            state = copy.deepcopy(filt.state_dict())  # as a checkpoint would
            fresh = PromptFilter(filt.config, filt._source)
            fresh.load_state_dict(state)
            filt = fresh
            continue
        out.append(([g.prompt_id for g in batch], sorted(filt.mastered), stats.metrics(3)))
    return out


@pytest.mark.parametrize("cache_reuse", ["resample", "reuse"])
def test_an_interrupted_search_resumed_from_its_state_equals_an_uninterrupted_one(cache_reuse):
    """Interrupt every search after its first draw (the hardest case: many stops per batch);
    the kept stack and statistics make the batches, mastered sets and metrics identical."""
    prompts = [Prompt(f"p{i}", p) for i, p in enumerate([0.05, 0.3, 0.6, 0.95] * 5)]
    cfg = FilterConfig(batch_size=3, max_draws=10_000, cache_reuse=cache_reuse)
    expected = _batches(PromptFilter(cfg, Source(prompts, size=2)), Roller(seed=3), 4)
    roller = Roller(seed=3)
    stops = 0

    def always_stop():
        nonlocal stops
        stops += 1
        return True

    got = _batches(PromptFilter(cfg, Source(prompts, size=2)), roller, 4, always_stop)
    assert got == expected
    assert stops > 4  # searches were interrupted, several times for some batches
    assert max(row[2]["filter/draws"] for row in got) > 1


def test_an_interrupted_search_keeps_its_groups_and_the_first_draw_always_runs():
    prompts = [Prompt(f"p{i}", 0.3) for i in range(8)]
    f = PromptFilter(FilterConfig(batch_size=4, max_draws=100), Source(prompts, size=1))
    roll = scripted({p.id: 2 for p in prompts})  # rho = 0.25: every group passes
    with pytest.raises(SearchInterrupted, match=r"after 2 draws .* with 2 of 4 groups"):
        f.next_batch(roll, _stop_after(2))
    assert f.pending is not None and [g.prompt_id for g in f.pending[0]] == ["p0", "p1"]
    with pytest.raises(SearchInterrupted, match=r"after 3 draws .* with 3 of 4 groups"):
        f.next_batch(roll, _stop_after(1))  # asked before the 2nd draw of this call: stop
    batch, stats = f.next_batch(roll, _stop_after(5))
    assert [g.prompt_id for g in batch] == ["p0", "p1", "p2", "p3"]
    assert stats.draws == 4 and stats.accepted == 4 and f.pending is None


def test_should_stop_sees_the_rollouts_the_search_has_generated_so_far():
    """``search_rollouts``: what a rollout budget's guard counts (``SpendBudget.search_guard``),
    the interrupted search's rollouts included when it continues."""
    prompts = [Prompt(f"p{i}", 0.3) for i in range(8)]
    f = PromptFilter(FilterConfig(batch_size=4, max_draws=100), Source(prompts, size=1))
    roll = scripted({p.id: 2 for p in prompts})
    seen: list[int] = []

    def record_then_stop_on_the_second_call():
        seen.append(f.search_rollouts)
        return len(seen) == 2

    with pytest.raises(SearchInterrupted):
        f.next_batch(roll, record_then_stop_on_the_second_call)
    assert seen == [K, 2 * K]  # one prompt of K rollouts per draw
    f.next_batch(roll, lambda: seen.append(f.search_rollouts) or False)
    assert seen[2:] == [3 * K]  # the continued search counts the interrupted one's rollouts


def test_filter_state_without_a_pending_search_loads(tmp_path):
    """Checkpoints written before interrupted searches existed have no 'pending' entry."""
    f = PromptFilter(FilterConfig(batch_size=1), Source([Prompt("a", 0.5)], size=1))
    f.load_state_dict({"cache": [], "mastered": ["b"]})
    assert f.pending is None and f.mastered == {"b"}


def test_exhausted_source_raises_a_clear_error_instead_of_looping():
    f = PromptFilter(FilterConfig(batch_size=4), Source([Prompt("a", 0)], 1, epochs=2))
    with pytest.raises(DataExhaustedError, match="exhausted"):
        f.next_batch(scripted({"a": 3}))


def test_source_with_only_mastered_prompts_raises_instead_of_looping():
    f = PromptFilter(FilterConfig(batch_size=1, max_draws=50), Source([Prompt("a", 1)], 1))
    with pytest.raises(DataExhaustedError, match="mastered"):
        f.next_batch(scripted({"a": 8}))


def test_disabled_filter_keeps_every_group_like_grpo():
    prompts = [Prompt(f"p{i}", 0) for i in range(4)]
    counts = {"p0": 0, "p1": 8, "p2": 3, "p3": 7}
    f = PromptFilter(FilterConfig(batch_size=4, enabled=False), Source(prompts, 4))
    batch, _ = f.next_batch(scripted(counts))
    assert [g.prompt_id for g in batch] == ["p0", "p1", "p2", "p3"] and not f.mastered


def test_zero_variance_filtering_keeps_mixed_groups_only():
    prompts = [Prompt(f"p{i}", 0) for i in range(4)]
    counts = {"p0": 0, "p1": 8, "p2": 3, "p3": 7}
    cfg = FilterConfig(batch_size=2, t_easy=0.99, t_master=None)
    batch, _ = PromptFilter(cfg, Source(prompts, 4)).next_batch(scripted(counts))
    assert [g.prompt_id for g in batch] == ["p2", "p3"]


def test_rollout_function_returning_wrong_number_of_groups_is_an_error():
    f = PromptFilter(FilterConfig(batch_size=1), Source([Prompt("a", 0)], 1))
    with pytest.raises(ValueError, match="returned 0 groups for 1 prompts"):
        f.next_batch(lambda ps: [])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"batch_size": 0}, "filter.batch_size"),
        ({"t_easy": 1.5}, "filter.t_easy"),
        ({"t_hard": 0.6, "t_easy": 0.5}, "filter.t_hard"),
        ({"t_master": -0.1}, "filter.t_master"),
        ({"unsolved": "keep"}, "'drop', 'keep_if_contrast'"),
        ({"cache_reuse": "never"}, "'resample', 'reuse'"),
    ],
)
def test_bad_config_names_the_field_and_the_allowed_values(kwargs, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        FilterConfig(**kwargs)
