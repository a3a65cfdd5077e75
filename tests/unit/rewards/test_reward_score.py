"""The paper's reward (1 / 0.1 / 0), the binary mode, and input coercion in ``score``."""

from __future__ import annotations

import pytest

from nemo_rence.rewards.math import PAPER_REWARDS, reward_value, score


def test_paper_reward_is_one_point_one_zero():
    assert PAPER_REWARDS == (1.0, 0.1, 0.0)
    right = score(r"Thus $\boxed{\dfrac{1}{2}}$.", "0.5")
    wrong = score(r"Thus $\boxed{3}$.", "0.5")
    unboxed = score("Thus the answer is 0.5.", "0.5")
    assert (right.reward, right.boxed, right.correct, right.extracted) == (
        1.0,
        True,
        True,
        r"\dfrac{1}{2}",
    )
    assert (wrong.reward, wrong.boxed, wrong.correct) == (0.1, True, False)
    assert (unboxed.reward, unboxed.boxed, unboxed.correct, unboxed.extracted) == (
        0.0,
        False,
        False,
        None,
    )


def test_binary_mode_gives_one_or_zero():
    assert score(r"\boxed{4}", "4", mode="binary").reward == 1.0
    assert score(r"\boxed{3}", "4", mode="binary").reward == 0.0
    assert score("4", "4", mode="binary").reward == 0.0


def test_unknown_mode_is_rejected_with_the_allowed_values():
    with pytest.raises(ValueError, match="paper"):
        score(r"\boxed{4}", "4", mode="ternary")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="binary"):
        reward_value(True, True, "other")


def test_truncated_answer_box_scores_zero_not_point_one():
    # A rollout cut off inside its final box has not stated an answer.
    assert score(r"so \boxed{4} hmm wait, \boxed{5", "5").reward == 0.0


def test_gold_given_as_a_solution_uses_its_last_box():
    assert score(r"\boxed{12}", r"We compute ... so the total is $\boxed{12}$.").correct


def test_long_response_keeps_its_tail_and_reports_truncation():
    result = score("x" * 100_000 + r"\boxed{7}", "7", max_chars=1000)
    assert result.truncated and result.correct
    head_only = score(r"\boxed{7}" + "x" * 5000, "7", max_chars=1000)
    assert head_only.truncated and not head_only.boxed


def test_bytes_none_and_numbers_are_accepted():
    assert score(b"\xff\xfe \\boxed{4}", "4").correct
    assert score(None, "4").reward == 0.0  # type: ignore[arg-type]
    assert score(r"\boxed{142}", 142.0).correct  # type: ignore[arg-type]
    assert score(r"\boxed{3}", 3).correct  # type: ignore[arg-type]


def test_multiple_choice_gold_accepts_letter_forms():
    assert score(r"\boxed{\textbf{(B)}}", "B").reward == 1.0
    assert score(r"\boxed{(D) 17}", "B").reward == 0.1


def test_score_in_a_worker_thread_uses_sympy_without_signals():
    # math-verify's signal timeouts raise in threads; score must disable them there, not fail.
    import threading

    out = {}
    thread = threading.Thread(target=lambda: out.update(r=score(r"\boxed{(x+1)^2}", "x^2+2x+1")))
    thread.start()
    thread.join(30)
    assert out["r"].correct and out["r"].method == "sympy" and not out["r"].error
