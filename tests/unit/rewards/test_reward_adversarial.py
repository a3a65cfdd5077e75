"""Hostile responses: each returns a result within the time limit, in-process and in the pool."""

from __future__ import annotations

import time

import pytest

from nemo_rence.rewards.math import score

HOSTILE = {
    "empty": "",
    "whitespace": " \n\t " * 100,
    "one_megabyte": "a" * 1_000_000,
    "one_megabyte_boxed_tail": "b" * 1_000_000 + r"\boxed{4}",
    "nested_braces_10k": "\\boxed{" + "{" * 10_000 + "4" + "}" * 10_000 + "}",
    "unbalanced_braces_10k": "\\boxed{" + "{" * 10_000 + "4",
    "closing_braces_10k": "\\boxed{4" + "}" * 10_000,
    "power_tower": r"\boxed{10^{10^{10^{10}}}}",
    "python_power_tower": r"\boxed{10**10**10**10}",
    "nested_powers": r"\boxed{((2^{999})^{999})^{999}}",
    "frac_bomb": "\\boxed{" + "\\frac{" * 200 + "1" + "}{2}" * 200 + "}",
    "frac_chain": "\\boxed{" + "+".join([f"\\frac{{1}}{{{i}}}" for i in range(1, 400)]) + "}",
    "huge_factorial": r"\boxed{100000!}",
    "factorial_of_factorial": r"\boxed{(100!)!}",
    "sci_notation_bomb": r"\boxed{1e100000000}",
    "big_integer": "\\boxed{" + "9" * 5000 + "}",
    "invalid_utf8_bytes": b"\xff\xfe\xfa \\boxed{4} \xc3\x28",
    "lone_surrogates": "\udcff\udcfe \\boxed{4}",
    "nan": r"\boxed{NaN}",
    "inf": r"\boxed{inf}",
    "minus_nan": r"\boxed{-nan}",
    "null_bytes": "\x00" * 1000 + r"\boxed{4}",
    "many_boxes": r"\boxed{1}" * 50_000,
    "many_markers": "\\boxed" * 100_000,
    "backslashes": "\\" * 100_000,
    "latex_env": r"\boxed{\begin{pmatrix}" + "1&" * 500 + r"1\end{pmatrix}}",
    "deep_parens": "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    "sqrt_chain": "\\boxed{" + "\\sqrt{" * 300 + "2" + "}" * 300 + "}",
    "huge_exponent": r"\boxed{2^{99999999}}",
    "binom_bomb": r"\boxed{\binom{10^{9}}{5 \cdot 10^{8}}}",
}
GOLD = "4"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_response_is_graded_in_process_quickly(name):
    start = time.perf_counter()
    # In-process, math-verify's own signal timeouts (1 s each for parse, parse, verify) apply.
    result = score(HOSTILE[name], GOLD, sympy_timeout_s=1)
    elapsed = time.perf_counter() - start
    assert result.reward in (0.0, 0.1, 1.0)
    assert not result.error, result.error
    assert elapsed < 3.5, f"{name} took {elapsed:.2f} s"


def test_hostile_batch_is_bounded_by_the_pool_time_limit(pool):
    names = sorted(HOSTILE)
    start = time.monotonic()
    results = pool.score_batch([HOSTILE[n] for n in names], [GOLD] * len(names))
    elapsed = time.monotonic() - start
    assert len(results) == len(names)
    by_name = dict(zip(names, results, strict=True))
    # The box at the tail of a 1 MB response still counts; hostile junk never does.
    assert (
        by_name["one_megabyte_boxed_tail"].correct and by_name["one_megabyte_boxed_tail"].truncated
    )
    assert by_name["invalid_utf8_bytes"].correct
    assert not by_name["power_tower"].correct and by_name["power_tower"].boxed
    assert not by_name["unbalanced_braces_10k"].boxed
    # Each item is bounded by timeout_s (2 s); the pool grades 2 at a time.
    assert all(r.elapsed_s <= pool.config.timeout_s + 0.5 for r in results)
    assert elapsed < len(names) * pool.config.timeout_s / 2 + 5
