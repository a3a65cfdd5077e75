"""Answers in texts: decimal commas, delimiters, runs of boxes, letters in prose, free text."""

from __future__ import annotations

import time

import pytest

from nemo_rence.rewards.extract import extract_free_text, extract_last_boxes, text_after_last_box
from nemo_rence.rewards.math import answer_text, equivalence, is_equivalent, score
from nemo_rence.rewards.normalize import parse_decimal_comma, parse_number


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("1,22", "1.22", True),
        ("1.22", "1,22", True),
        ("1000,99", "1000.99", True),
        ("0,111", "0.111", True),
        ("12,345", "12345", True),  # three digits after one comma: thousands
        ("1,25", "1.22", False),
        ("32, 349", "32349", False),  # a space after the comma: a list
    ],
)
def test_decimal_comma_against_a_number(pred, gold, expected):
    assert is_equivalent(pred, gold) is expected


def test_decimal_comma_is_read_only_against_a_number():
    assert parse_decimal_comma("1,5") is not None and parse_decimal_comma("1,500") is None
    assert parse_number("0,111") is None  # no thousands group starts with 0
    assert is_equivalent("1,5", "1, 5") and not is_equivalent("1,5", "15")


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("Answer $ 9 $", "$9$", True),
        ("Answer $$ 9 $$", "$9$", True),
        (r"Answer \( 9 \)", "$9$", True),
        ("Answer $ \n 9 \n $", "$9$", False),  # inline math does not span lines
        ("the number is not 10 which is 1,000.99€", "1000.99", True),
        ("Final Answer: The largest $n$ is 34.", "$34$", True),
        ("Therefore I think it's B", "B", True),
        ("The answer is for sure D, it can't be A or B", "D", True),
        ("réponse est C non A", "C", True),
        ("B。不是 A", "B", True),
        ("\n答案: D", "B", False),
        ("(D) Alina", "D", True),
        ("-2 \\le x \\le 7", "x \\in [-2, 7]", False),  # math-verify: only with the option
        ("x \\in [-2, 7]", "-2 \\le x \\le 7", True),
        ("x != 5", "x \\neq 5", True),
    ],
)
def test_answers_stated_in_texts(pred, gold, expected):
    assert is_equivalent(pred, gold) is expected


def test_set_relation_option_is_passed_to_math_verify():
    assert is_equivalent("-2 \\le x \\le 7", "x \\in [-2, 7]", allow_set_relation_comp=True)


def test_precision_rounds_decimals_like_math_verify():
    assert is_equivalent("0.3333", r"\frac{1}{3}", precision=4)
    assert not is_equivalent("0.3333", r"\frac{1}{3}")
    assert is_equivalent("(0.6, 2.6667]", r"(\frac{3}{5}, \frac{8}{3}]", precision=2)


def test_a_run_of_boxes_is_one_answer_and_prose_between_boxes_splits_runs():
    assert extract_last_boxes(r"\boxed{1}\boxed{2}") == ["1", "2"]
    assert extract_last_boxes(r"\boxed{(2, 2)} \quad \text{and} \quad \boxed{(6, 2)}") == [
        "(2, 2)",
        "(6, 2)",
    ]
    assert extract_last_boxes(r"\boxed{4} is wrong, so we try again and get \boxed{5}") == ["5"]
    assert extract_last_boxes(r"\boxed{004} text \boxed{004}") == ["004"]
    assert answer_text(r"so $\boxed{1}$ and $\boxed{2}$") == "1, 2"
    assert is_equivalent(r"\boxed{1}\boxed{2}", r"\boxed{1,2}")
    assert is_equivalent(r"\boxed{k = 45} \quad \text{and} \quad \boxed{n = 2}", "k = 45, n = 2")
    assert not is_equivalent(r"\boxed{1} no no no no no \boxed{2}", r"\boxed{1,2}")


def test_score_joins_a_run_of_boxes_only_for_a_list_gold():
    joined = score(r"so \boxed{(2, 2)} \quad \text{and} \quad \boxed{(6, 2)}", "(2, 2), (6, 2)")
    assert joined.reward == 1.0 and joined.extracted == "(2, 2), (6, 2)"
    assert score(r"\boxed{3}, \boxed{4}", r"\{3, 4\}").reward == 1.0
    # the last box decides for a single-value gold: an earlier box never helps
    assert score(r"\boxed{4}, \boxed{5}", "4").reward == 0.1
    assert score(r"\boxed{3}, \boxed{5}", "3, 4").reward == 0.1


def test_a_box_followed_by_a_stated_final_answer_is_read_by_math_verify():
    text = (
        r"so $400 \cdot \frac{1}{2} = \boxed{200}$ So, the total is $10,455. "
        r"Final Answer: The final answer is $10,455$. I hope it is correct."
    )
    assert text_after_last_box(text) is not None
    assert is_equivalent(text, "10455")
    assert not is_equivalent(r"\boxed{200}", "10455")


def test_free_text_extraction_only_when_asked():
    response = "3 + 4 = 7 apples and 5 pears, so the answer is 12."
    assert score(response, "12").reward == 0.0
    free = score(response, "12", extract="free_text")
    assert free.reward == 1.0 and free.correct and not free.boxed and free.extracted == "12"
    assert score("We get 12 and then 3/4", "3/4", extract="free_text").correct
    assert score("#### 1,000", "1000", extract="free_text").correct
    assert score(r"so \boxed{3} and the answer is 4", "4", extract="free_text").reward == 0.1
    assert extract_free_text("no numbers here") is None
    with pytest.raises(ValueError, match="extract"):
        score("x", "1", extract="last")  # type: ignore[arg-type]


HOSTILE_TEXTS = {
    "tower_in_prose": "so the answer is 10^{10^{10^{10}}} indeed",
    "python_tower_in_prose": "the answer is 10**10**10**10.",
    "bold_tower": "the answer is **10**10**10**",
    "factorial_in_prose": "Answer: $(100!)!$",
    "long_solution": "word " * 200_000 + "the answer is $5$",
    "many_boxes": r"\boxed{1} and " * 20_000,
    "deep_dollars": "$" * 50_000,
    "frac_bomb_text": "Answer: $" + "\\frac{" * 200 + "1" + "}{2}" * 200 + "$",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_TEXTS))
def test_hostile_texts_return_quickly_and_never_raise(name):
    start = time.perf_counter()
    for pred, gold in ((HOSTILE_TEXTS[name], "5"), ("5", HOSTILE_TEXTS[name])):
        assert isinstance(is_equivalent(pred, gold), bool)
    assert time.perf_counter() - start < 12.0  # math-verify's own 5 s limits, twice at most


def test_hostile_answers_in_texts_never_reach_sympy():
    for name in ("tower_in_prose", "python_tower_in_prose", "bold_tower", "factorial_in_prose"):
        assert equivalence(HOSTILE_TEXTS[name], "5")[1] in ("rejected", "number", "string"), name


def test_number_form_accepts_a_decimal_comma_but_not_an_expression_or_a_run_of_boxes():
    from nemo_rence.rewards.math import enforce_answer_form

    assert enforce_answer_form(score(r"\boxed{1,5}", "1.5"), "number").reward == 1.0
    assert enforce_answer_form(score(r"\boxed{1 + 0.5}", "1.5"), "number").reward == 0.1
    joined = score(r"\boxed{3}, \boxed{4}", "3, 4")
    assert joined.correct and enforce_answer_form(joined, "number").method == "not_a_number"


def test_a_one_line_answer_with_a_word_is_not_read_as_its_first_number():
    # math-verify's text reader takes the first number of "97 \text{ apples}+1"
    assert not is_equivalent(r"97 \text{ apples}+1", "97")
    assert is_equivalent(r"97 \text{ apples}", "97")
    assert score(r"so \boxed{97 \text{ apples}+1}", "97").reward == 0.1
