"""Differential test against math-verify on a generated corpus (tests/unit/rewards/differential.py)."""

from __future__ import annotations

import pytest

from nemo_rence.rewards.math import is_equivalent
from tests.unit.rewards.differential import (
    EXCEPTIONS,
    GENERATORS,
    Pair,
    compare,
    corpus,
    math_verify_says,
)


@pytest.fixture(scope="module")
def result():
    return compare(corpus(rounds=3, seed=1))


def test_corpus_covers_every_kind_with_equal_and_unequal_pairs():
    pairs = corpus(rounds=2, seed=1)
    kinds = {p.kind for p in pairs}
    assert {
        "integer",
        "decimal_comma",
        "fraction",
        "latex",
        "units",
        "interval",
        "set",
        "tuple",
        "matrix",
        "equation",
        "letter",
        "multi_box",
        "free_text",
    } <= kinds
    assert len(pairs) >= 70 * 2 and len(GENERATORS) >= 11
    verdicts = {(p.kind, math_verify_says(p.pred, p.gold)) for p in pairs}
    for kind in ("integer", "fraction", "interval", "tuple", "matrix", "letter"):
        assert (kind, True) in verdicts and (kind, False) in verdicts, kind


def test_every_disagreement_with_math_verify_is_a_documented_exception(result):
    undocumented = [(p, o, t) for p, o, t, reason in result["disagreements"] if not reason]
    assert not undocumented


def test_agreement_with_math_verify_is_high_on_every_kind(result):
    for kind, (n, agree) in result["kinds"].items():
        floor = 0.6 if kind == "units" else 1.0  # units: the three exceptions below
        assert agree / n >= floor, (kind, agree, n)


def test_escaped_dollar_is_a_currency_sign_exception():
    pair = Pair("units", r"\$403", "403")
    assert is_equivalent(pair.pred, pair.gold) and not math_verify_says(pair.pred, pair.gold)
    assert EXCEPTIONS["currency"](pair, True, False)
    assert not is_equivalent(r"\$404", "403")


def test_percentage_equals_its_ratio_exception():
    pair = Pair("units", r"403\%", "4.03")
    assert is_equivalent(pair.pred, pair.gold) and not math_verify_says(pair.pred, pair.gold)
    assert EXCEPTIONS["percent_ratio"](pair, True, False)
    assert is_equivalent(r"403\%", "403")
    assert not is_equivalent(r"403\%", "40.3")


def test_a_number_then_a_unit_then_more_is_not_the_number_exception():
    pair = Pair("units", r"97 \text{ cm}+1", "97")
    assert math_verify_says(pair.pred, pair.gold) and not is_equivalent(pair.pred, pair.gold)
    assert EXCEPTIONS["first_number"](pair, False, True)
