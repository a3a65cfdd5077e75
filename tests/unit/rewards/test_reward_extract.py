"""Boxed-answer extraction: the last box decides, nested braces, wrappers, unterminated boxes."""

from __future__ import annotations

import pytest

from nemo_rence.rewards.extract import extract_boxed, strip_math_wrappers

CASES = [
    (r"The answer is \boxed{5}.", "5"),
    (r"$\boxed{5}$", "5"),
    (r"\boxed{ 5 }", "5"),
    (r"\boxed{$5$}", "5"),
    (r"\boxed {5}", "5"),
    (r"\fbox{7}", "7"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\frac{\sqrt{\frac{1}{2}}}{2}}", r"\frac{\sqrt{\frac{1}{2}}}{2}"),
    (r"first \boxed{1} then \boxed{2}", "2"),
    (r"\boxed{1} and \fbox{3}", "3"),
    (r"\boxed 5", "5"),
    (r"so $\boxed 42$.", "42"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),
    (r"\boxed{\left\{ x \right.}", r"\left\{ x \right."),
    (r"\boxed{a\}b}", r"a\}b"),
    (r"\boxed{\text{(C)}}", r"\text{(C)}"),
    ("\\boxed{(1,2]}", "(1,2]"),
    (r"\boxed{\boxed{9}}", "9"),
    ("line\n\\boxed{x^2}\nmore text after", "x^2"),
    ("\\boxed{" + "{" * 10_000 + "}" * 10_000 + "}", "{" * 10_000 + "}" * 10_000),
]

NOT_BOXED = [
    "",
    "The answer is 5.",
    r"\boxed{5",
    r"\boxed{1} and finally \boxed{2",
    r"\boxed{}",
    r"\boxed{  }",
    r"\boxed{$$}",
    r"\boxedx{5}",
    r"\boxed",
    "\\boxed{" + "{" * 10_000,
    r"boxed{5}",
    r"\boxed }",
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=lambda v: repr(v)[:30])
def test_extracts_the_last_complete_box(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text", NOT_BOXED, ids=lambda v: repr(v)[:30])
def test_missing_unterminated_or_empty_box_is_not_boxed(text):
    assert extract_boxed(text) is None


def test_wrappers_are_stripped_in_layers():
    assert strip_math_wrappers("  $ \\( 5 \\) $ ") == "5"
    assert strip_math_wrappers("\\[x\\]") == "x"
    assert strip_math_wrappers("$") == "$"
