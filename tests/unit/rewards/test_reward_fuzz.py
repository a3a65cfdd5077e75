"""Property-based tests: the grader never raises and never exceeds its time limit."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nemo_rence.rewards.extract import extract_boxed
from nemo_rence.rewards.math import RewardResult, is_equivalent, score

LATEX_ATOMS = [
    "\\boxed{",
    "\\fbox{",
    "{",
    "}",
    "\\frac",
    "\\dfrac",
    "\\sqrt",
    "^",
    "_",
    "\\left(",
    "\\right)",
    "\\{",
    "\\}",
    "(",
    ")",
    "[",
    "]",
    ",",
    "$",
    "\\text{",
    "\\%",
    "%",
    "-",
    "+",
    "*",
    "/",
    "=",
    "\\pi",
    "\\infty",
    "x",
    "y",
    "0",
    "1",
    "2",
    "9",
    "10",
    ".",
    " ",
    "\\cdot",
    "\\times",
    "!",
    "\\boxed ",
    "\\",
    "^{",
    "\\circ",
    "nan",
    "e",
    "\\cup",
    "\\begin{pmatrix}",
    "&",
    "\\\\",
]
latex_soup = st.lists(st.sampled_from(LATEX_ATOMS), max_size=40).map("".join)
any_text = st.one_of(st.text(max_size=300), latex_soup, st.binary(max_size=200))
answers = st.one_of(latex_soup, st.text(max_size=30), st.integers().map(str))

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(response=any_text, gold=answers)
def test_score_never_raises_and_returns_a_valid_reward(response, gold):
    start = time.perf_counter()
    result = score(response, gold)
    assert isinstance(result, RewardResult)
    assert result.reward in (0.0, 0.1, 1.0)
    assert result.correct <= result.boxed
    assert (result.extracted is not None) == result.boxed
    assert time.perf_counter() - start < 12.0  # math-verify's signal limits: parse + verify


@FUZZ
@given(text=any_text)
def test_extraction_is_total_and_returns_a_substring(text):
    got = extract_boxed(text) if isinstance(text, str) else None
    if got is not None:
        assert got.strip() and got in text


@FUZZ
@given(pred=answers, gold=answers)
def test_is_equivalent_is_total_and_reflexive_on_the_gold(pred, gold):
    assert isinstance(is_equivalent(pred, gold), bool)
    if gold.strip():
        assert is_equivalent(gold, gold)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(st.tuples(any_text, answers), min_size=1, max_size=24))
def test_pool_never_exceeds_its_limit(pool, batch):
    start = time.monotonic()
    results = pool.score_batch([r for r, _ in batch], [g for _, g in batch])
    elapsed = time.monotonic() - start
    assert len(results) == len(batch)
    assert all(r.reward in (0.0, 0.1, 1.0) for r in results)
    assert all(r.elapsed_s <= pool.config.timeout_s + 0.5 for r in results)
    assert elapsed <= len(batch) * pool.config.timeout_s + 5
