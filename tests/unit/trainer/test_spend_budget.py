"""``run.budget_kind`` / ``run.budget_amount``: what an iteration spends and when the run stops."""

from __future__ import annotations

import json

import pytest

from nemo_rence.budget import SpendBudget, StopPolicy, TimeBudget, iteration_cost
from nemo_rence.config import ConfigError, RunConfig

ROW = {
    "iteration": 1,
    "filter/rollouts": 24.0,
    "filter/draws": 3.0,
    "rollout/response_tokens_mean": 10.0,
    "time/rollout": 30.0,
    "time/update": 60.0,
    "time/refit": 30.0,
}


def test_iteration_cost_of_each_kind():
    assert iteration_cost("rollouts", ROW, 4) == (24.0, 24.0)
    assert iteration_cost("tokens", ROW, 4) == (240.0, 240.0)
    assert iteration_cost("optimizer_steps", ROW, 4) == (4.0, 0.0)
    assert iteration_cost("wall_clock_min", ROW, 4) == (pytest.approx(2.0), pytest.approx(0.5))


def test_constant_cost_iterations_spend_the_budget_exactly():
    spend = SpendBudget("rollouts", 48.0)
    assert not spend.over()  # the first iteration always starts
    spend.record(ROW)
    assert not spend.over()  # 24 + 24 <= 48
    spend.record(ROW)
    assert spend.spent == 48.0 and spend.over()


def test_without_a_draw_bound_the_last_iteration_predicts_the_next():
    spend = SpendBudget("rollouts", 40.0)
    spend.record(ROW)
    assert spend.over()  # 24 + 24 > 40: stop with 24 spent, never more than 40
    assert "24 of run.budget_amount=40 rollouts" in spend.explain()
    assert "the last iteration spent 24" in spend.explain()


def test_an_expensive_first_iteration_does_not_end_the_run_while_a_draw_fits():
    # seed 4 of the CPU study: the first batch search took 7 draws (896 rollouts); predicting the
    # next iteration from that one stopped the run with 384 of its 1,280 rollouts unspent
    spend = SpendBudget("rollouts", 1280.0, draw_rollouts=128)
    spend.record({"iteration": 1, "filter/rollouts": 896.0, "filter/draws": 7.0})
    assert not spend.over()  # 896 + 128 <= 1280
    guard = spend.search_guard()
    assert [guard(), guard(), guard()] == [False, False, True]  # draw 4 would reach 1408
    spend.record({"iteration": 2, "filter/rollouts": 256.0, "filter/draws": 2.0})  # 1152
    assert not spend.over()  # 1152 + 128 <= 1280
    spend.record({"iteration": 3, "filter/rollouts": 128.0, "filter/draws": 1.0})  # 1280
    assert spend.over()
    assert spend.explain() == (
        "1280 of run.budget_amount=1280 rollouts spent; a draw may cost 128: not one more draw fits"
    )


def test_kinds_without_a_draw_bound_keep_the_prediction():
    steps = SpendBudget("optimizer_steps", 6.0, n_update=4, draw_rollouts=128)
    steps.record(ROW)
    assert steps.over()  # 4 + 4 > 6
    minutes = SpendBudget("wall_clock_min", 3.8, draw_rollouts=128)
    minutes.record(ROW)  # 2 minutes, 0.5 of them in the search's 3 draws
    assert minutes.over()  # 2 + 2 > 3.8, though one draw and the rest fit: 2 + 0.5 / 3 + 1.5


def test_search_guard_stops_before_the_draw_that_would_overspend():
    spend = SpendBudget("rollouts", 50.0)
    spend.record(ROW)  # 24 spent, 8 rollouts per draw last time
    guard = spend.search_guard()
    assert not guard()  # 1 draw done, a 2nd: 24 + 16 <= 50
    assert not guard()  # a 3rd: 24 + 24 <= 50
    assert guard()  # a 4th: 24 + 32 > 50


def test_stop_policy_names_the_spend_budget():
    policy = StopPolicy(TimeBudget(0.0, 0.0), None, SpendBudget("optimizer_steps", 4.0, 4))
    assert policy.before_iteration() is None
    policy.record(ROW)
    assert "4 of run.budget_amount=4 optimizer_steps" in (policy.before_iteration() or "")
    assert policy.label == "budget"


def test_zero_amount_means_no_budget():
    spend = SpendBudget("rollouts", 0.0)
    for _ in range(100):
        spend.record(ROW)
    assert not spend.over() and not spend.search_guard()()


def test_restore_recounts_the_checkpointed_iterations(tmp_path):
    rows = [
        {"iteration": 0, "eval/accuracy": 0.0},
        {**ROW, "iteration": 1, "filter/rollouts": 8.0},
        {**ROW, "iteration": 2, "filter/rollouts": 16.0},
        {**ROW, "iteration": 2, "filter/rollouts": 12.0},  # logged again after a resume
        {**ROW, "iteration": 3, "filter/rollouts": 99.0},  # after the checkpoint resumed from
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spend = SpendBudget("rollouts", 30.0)
    spend.restore(path, iteration=2)
    assert spend.spent == 20.0
    assert spend.over()  # 20 + 12 > 30


@pytest.mark.parametrize(("field", "value"), [("budget_kind", "prompts"), ("budget_amount", -1)])
def test_bad_budget_is_a_config_error(field, value):
    with pytest.raises(ConfigError, match=rf"run\.{field}"):
        RunConfig(**{field: value})


def test_draws_are_bounded_by_their_largest_possible_cost_never_overspending():
    # the case that overspent: the last search averaged 68 rollouts per draw (a cheap cache
    # draw among them), but a draw of 16 prompts x K=8 costs 128
    row = {"iteration": 6, "filter/rollouts": 136.0, "filter/draws": 2.0}
    spend = SpendBudget("rollouts", 1280.0, draw_rollouts=128)
    spend.spent = 968.0
    spend.record(row)  # 1104 spent
    assert spend.draw_bound() == 128.0
    assert not spend.over()  # 1104 + 136 <= 1280 and one draw fits: 1104 + 128 <= 1280
    guard = spend.search_guard()
    assert guard()  # a 2nd draw could reach 1104 + 2 x 128 = 1360 > 1280
    unbounded = SpendBudget("rollouts", 1280.0)
    unbounded.spent = 968.0
    unbounded.record(row)
    assert not unbounded.search_guard()()  # the per-draw average (68) alone let it overspend


def test_an_iteration_does_not_start_when_not_even_one_draw_fits():
    spend = SpendBudget("rollouts", 100.0, draw_rollouts=64)
    spend.record({"iteration": 1, "filter/rollouts": 32.0, "filter/draws": 1.0})
    assert not spend.over()  # 32 + 64 <= 100
    spend.record({"iteration": 2, "filter/rollouts": 32.0, "filter/draws": 1.0})
    assert spend.over()  # 64 + 32 <= 100, but a draw may cost 64: 128 > 100


def test_a_token_budget_bounds_a_draw_by_its_rollouts_at_the_last_mean_length():
    spend = SpendBudget("tokens", 10_000.0, draw_rollouts=64)
    spend.record({"iteration": 1, "filter/rollouts": 32.0, "filter/draws": 2.0, **_tokens(10.0)})
    assert spend.draw_bound() == 64 * 10.0  # 320 tokens over 32 rollouts: 10 per rollout


def _tokens(mean: float) -> dict[str, float]:
    return {"rollout/response_tokens_mean": mean}


def test_the_guard_counts_the_draws_done_at_what_they_cost():
    # seed 2 of the CPU study: 1,120 spent, the last search's first draw re-sampled one cached
    # prompt (8 rollouts); counting that draw at its bound (128) stopped the run with 152 unspent
    searched = [8.0]
    spend = SpendBudget("rollouts", 1280.0, draw_rollouts=128)
    spend.spent = 856.0
    spend.record({"iteration": 6, "filter/rollouts": 264.0, "filter/draws": 3.0})  # 1120
    assert not spend.search_guard(lambda: searched[0])()  # 1120 + 8 + 128 <= 1280
    assert spend.search_guard()()  # without the count: 1120 + 2 x 128 > 1280
    searched[0] = 40.0
    assert spend.search_guard(lambda: searched[0])()  # 1120 + 40 + 128 > 1280


def test_the_first_search_is_guarded_when_its_rollouts_are_counted():
    # seeds 1 and 3: the first search needs 1,408 rollouts; it now stops within 1,280
    spend = SpendBudget("rollouts", 1280.0, draw_rollouts=128)
    guard = spend.search_guard(lambda: 1152.0)
    assert not guard()  # 1152 + 128 <= 1280
    assert spend.search_guard(lambda: 1160.0)()
    tokens = SpendBudget("tokens", 1000.0, draw_rollouts=128)
    assert not tokens.search_guard(lambda: 1e6)()  # tokens per rollout unknown before the first


def test_a_token_guard_counts_the_search_at_the_last_mean_length():
    spend = SpendBudget("tokens", 10_000.0, draw_rollouts=64)
    spend.record({"iteration": 1, "filter/rollouts": 32.0, "filter/draws": 2.0, **_tokens(10.0)})
    # 320 spent; a draw may cost 640 tokens
    assert not spend.search_guard(lambda: 900.0)()  # 320 + 9,000 + 640 = 9,960
    assert spend.search_guard(lambda: 905.0)()  # 320 + 9,050 + 640 > 10,000
