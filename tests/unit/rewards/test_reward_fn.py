"""MathReward implements the RewardFn protocol on PromptRecords; the pool works from threads."""

from __future__ import annotations

import threading

import pytest

from nemo_rence.data.records import PromptRecord
from nemo_rence.rewards.protocol import RewardFn
from nemo_rence.rewards.reward_fn import MathReward, RewardConfig


def test_math_reward_grades_records_single_and_batched():
    record = PromptRecord(id="p0", problem="What is 1/2 + 1/4?", answer=r"\frac{3}{4}", source="t")
    cfg = RewardConfig(workers=1, mode="binary")
    with MathReward(cfg) as reward_fn:
        assert isinstance(reward_fn, RewardFn)
        assert reward_fn(record, r"... so $\boxed{0.75}$").reward == 1.0
        results = reward_fn.batch([record, record], [r"\boxed{0.5}", "0.75"])
        assert [r.reward for r in results] == [0.0, 0.0]  # binary: wrong and unboxed are 0
        assert reward_fn.metrics()["rewards/items"] == 3.0
        with pytest.raises(ValueError, match="same length"):
            reward_fn.batch([record], [])


def test_pool_called_from_threads_grades_correctly(pool):
    results: dict[int, list[float]] = {}

    def work(i: int) -> None:
        res = pool.score_batch([rf"\boxed{{{i}}}", rf"\boxed{{{i + 1}}}"], [str(i), str(i)])
        results[i] = [r.reward for r in res]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: [1.0, 0.1] for i in range(3)}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "ternary"),
        ("workers", 0),
        ("timeout_s", 0.0),
        ("timeout_s", float("nan")),
        ("answer_form", "word"),
        ("max_chars", 0),
    ],
)
def test_reward_config_names_the_field_and_the_allowed_values(field, value):
    with pytest.raises(ValueError, match=rf"reward\.{field} must be"):
        RewardConfig(**{field: value})


def test_reward_config_answer_form_overrides_the_records_form():
    record = PromptRecord(
        "p", "Compute 5 + 3.", "8", "synthetic", metadata={"answer_form": "number"}
    )
    assert RewardConfig().form_of(record) == "number"
    assert RewardConfig(answer_form="any").form_of(record) == "any"
    assert RewardConfig().grader().num_workers == 1 and RewardConfig().grader().mode == "paper"


@pytest.mark.parametrize(
    ("boxed", "form", "reward", "method"),
    [
        ("8", "number", 1.0, None),
        ("8.0", "number", 1.0, None),
        (r"\frac{16}{2}", "number", 1.0, None),
        ("5 + 3", "number", 0.1, "not_a_number"),  # the problem copied into the box
        ("2 * 4", "number", 0.1, "not_a_number"),
        ("5 + 3", "any", 1.0, "sympy"),  # benchmarks: equivalence alone
        ("9", "number", 0.1, "number"),  # wrong stays wrong
    ],
)
def test_a_record_asking_for_a_number_rejects_an_unevaluated_expression(
    boxed, form, reward, method
):
    record = PromptRecord("p", "Compute 5 + 3.", "8", "synthetic", metadata={"answer_form": form})
    with MathReward(RewardConfig(workers=1)) as reward_fn:
        (result,) = reward_fn.batch([record], [rf"so \boxed{{{boxed}}}"])
    assert result.reward == reward and result.boxed
    assert result.correct == (reward == 1.0)
    if method is not None:
        assert result.method == method


def test_an_unknown_answer_form_is_an_error_naming_the_allowed_ones():
    from nemo_rence.rewards.math import enforce_answer_form, score

    with pytest.raises(ValueError, match=r"answer_form must be one of \('any', 'number'\)"):
        enforce_answer_form(score(r"\boxed{8}", "8"), "integer")


def test_free_text_extract_grades_unboxed_answers_only_when_configured():
    record = PromptRecord(id="g0", problem="How many?", answer="1000", source="gsm8k")
    responses = ["so the answer is 1,000.", "#### 999", r"\boxed{1000}", "no number"]
    cfg = RewardConfig(workers=1, mode="binary", extract="free_text")
    with MathReward(cfg) as reward_fn:
        results = reward_fn.batch([record] * 4, responses)
    assert [r.reward for r in results] == [1.0, 0.0, 1.0, 0.0]
    assert [r.boxed for r in results] == [False, False, True, False]
    with MathReward(RewardConfig(workers=1, mode="binary")) as boxed:
        assert boxed(record, responses[0]).reward == 0.0  # the paper's reward reads boxes only
    with pytest.raises(ValueError, match=r"reward\.extract"):
        RewardConfig(extract="last_number")
