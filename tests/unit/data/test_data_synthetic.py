"""Synthetic arithmetic: exact answers, determinism, difficulty knobs, disjoint splits."""

from __future__ import annotations

import re

import pytest

from nemo_rence.data.synthetic import ArithmeticConfig, evaluate, generate_arithmetic
from nemo_rence.rewards.math import enforce_answer_form, score


def _value(problem: str) -> int:
    """Recompute the answer of 'Compute a op b ... .' independently (tokens + precedence)."""
    tokens = re.findall(r"\d+|[+*-]", problem)
    # fold multiplications first, then add / subtract left to right
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "*":
            out[-1] = str(int(out[-1]) * int(tokens[i + 1]))
            i += 2
        else:
            out.append(tokens[i])
            i += 1
    total = int(out[0])
    for op, x in zip(out[1::2], out[2::2], strict=True):
        total = total + int(x) if op == "+" else total - int(x)
    return total


def test_answers_are_exact_and_gradeable():
    records = generate_arithmetic(50, ArithmeticConfig(digits=3, steps=3, seed=1))
    for r in records:
        assert int(r.answer) == _value(r.problem)
        assert score(rf"so \boxed{{{r.answer}}}", r.answer).reward == 1.0


def test_records_ask_for_a_number_so_the_copied_problem_is_not_correct():
    """'Compute 5 + 3.': \\boxed{5 + 3} is equivalent to 8, but it is the question, not an answer."""
    for r in generate_arithmetic(20, ArithmeticConfig(digits=1, steps=1, seed=0)):
        form = r.metadata["answer_form"]
        assert form == "number"
        expr = r.problem.removeprefix("Compute ").removesuffix(".")
        copied = score(rf"\boxed{{{expr}}}", r.answer)
        assert copied.correct  # the grader's equivalence alone accepts it ...
        assert enforce_answer_form(copied, form).reward == 0.1  # ... the task does not
        assert enforce_answer_form(score(rf"\boxed{{{r.answer}}}", r.answer), form).reward == 1.0


def test_evaluate_uses_operator_precedence():
    assert evaluate([2, 3, 4], ["+", "*"]) == 14
    assert evaluate([10, 2, 3], ["-", "-"]) == 5
    assert evaluate([5], []) == 5


def test_same_seed_same_problems_other_seed_other_problems():
    cfg = ArithmeticConfig(digits=2, steps=2, seed=7)
    assert generate_arithmetic(20, cfg) == generate_arithmetic(
        20, ArithmeticConfig(digits=2, steps=2, seed=7)
    )
    other = generate_arithmetic(20, ArithmeticConfig(digits=2, steps=2, seed=8))
    assert [r.problem for r in other] != [r.problem for r in generate_arithmetic(20, cfg)]


def test_train_and_heldout_never_overlap_across_seeds():
    train = set()
    held = set()
    for seed in range(3):
        cfg = ArithmeticConfig(
            digits=1, steps=1, operations=("+",), heldout_fraction=0.3, seed=seed
        )
        train |= {r.problem for r in generate_arithmetic(40, cfg, "train")}
        held |= {r.problem for r in generate_arithmetic(15, cfg, "heldout")}
    assert train and held and not (train & held)


def test_difficulty_knobs_shape_the_problems():
    r = generate_arithmetic(1, ArithmeticConfig(digits=4, steps=5, operations=("*",)))[0]
    numbers = re.findall(r"\d+", r.problem)
    assert len(numbers) == 6 and all(len(n) == 4 for n in numbers)
    assert r.problem.count("*") == 5


def test_too_small_space_and_bad_config_fail_clearly():
    with pytest.raises(ValueError, match="too small"):
        generate_arithmetic(500, ArithmeticConfig(digits=1, steps=1, operations=("+",)))
    with pytest.raises(ValueError, match="digits"):
        ArithmeticConfig(digits=0)
    with pytest.raises(ValueError, match="operations"):
        ArithmeticConfig(operations=("/",))
    with pytest.raises(ValueError, match="split"):
        generate_arithmetic(1, split="test")
