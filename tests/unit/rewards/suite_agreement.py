"""Agreement of our verdicts and math-verify's own with the public suites' expected verdicts.

For every case of :mod:`tests.unit.rewards.suite_cases_hf` and
:mod:`tests.unit.rewards.suite_cases_other`, three verdicts are compared:

- expected: what the suite asserts;
- math-verify: ``parse`` + ``verify`` with the extraction configs and settings the suite uses;
- ours: :func:`nemo_rence.rewards.math.is_equivalent` with the suite's precision and set option.

Run ``python -m tests.unit.rewards.suite_agreement`` for the tables (docs/grader.md quotes them).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from nemo_rence.rewards.math import is_equivalent
from tests.unit.rewards.suite_case import Case
from tests.unit.rewards.suite_cases_hf import LIGHTEVAL, MATH_VERIFY
from tests.unit.rewards.suite_cases_other import NEMO_RL, QWEN, RLLM, TRL, VERL

SUITES: dict[str, list[Case]] = {
    "math-verify": MATH_VERIFY,
    "lighteval": LIGHTEVAL,
    "verl": VERL,
    "rllm": RLLM,
    "Qwen2.5-Math": QWEN,
    "TRL": TRL,
    "NeMo-RL": NEMO_RL,
}


def math_verify_verdict(case: Case, suite: str) -> bool:
    """math-verify's own verdict, called the way the suite calls it."""
    from math_verify import (
        ExprExtractionConfig,
        LatexExtractionConfig,
        StringExtractionConfig,
        parse,
        verify,
    )

    match = case.opts.get("match", ("latex", "expr"))
    configs: list[Any] = []
    for m in match:
        if m == "latex":
            # Math-Verify's compare_strings gives boxed answers no priority; lighteval's default.
            priority = 0 if suite == "math-verify" else 50
            configs.append(LatexExtractionConfig(boxed_match_priority=priority))
        elif m == "expr":
            configs.append(ExprExtractionConfig())
        elif m == "letters":
            configs.append(StringExtractionConfig())
    try:
        if not configs:  # "default": parse() with its own defaults
            gold, pred = parse(case.gold), parse(case.pred)
        else:
            gold, pred = parse(case.gold, configs), parse(case.pred, configs)
        return bool(
            verify(
                gold,
                pred,
                float_rounding=case.opts.get("precision", 6),
                strict=case.opts.get("strict", True),
                allow_set_relation_comp=case.opts.get("allow_set_relation_comp", False),
            )
        )
    except Exception:
        return False


def our_verdict(case: Case) -> bool:
    """Our verdict with the suite's settings for the case."""
    return is_equivalent(
        case.pred,
        case.gold,
        precision=case.opts.get("precision", 6),
        strict=case.opts.get("strict", True),
        allow_set_relation_comp=case.opts.get("allow_set_relation_comp", False),
    )


def agreement() -> dict[str, Any]:
    """Per suite and per kind: cases, ours == expected, math-verify == expected, and the misses."""
    per_suite: dict[str, list[int]] = {}
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    misses: list[tuple[str, Case, bool, bool]] = []
    for suite, cases in SUITES.items():
        row = [0, 0, 0]
        for case in cases:
            ours = our_verdict(case)
            theirs = math_verify_verdict(case, suite)
            for tally in (row, per_kind[case.kind]):
                tally[0] += 1
                tally[1] += ours == case.expected
                tally[2] += theirs == case.expected
            if ours != case.expected or theirs != case.expected:
                misses.append((suite, case, ours, theirs))
        per_suite[suite] = row
    return {"suites": per_suite, "kinds": dict(per_kind), "misses": misses}


def _table(title: str, rows: dict[str, list[int]]) -> str:
    lines = [f"| {title} | cases | ours = expected | math-verify = expected |", "|---|---|---|---|"]
    total = [0, 0, 0]
    for name, (n, ours, theirs) in rows.items():
        lines.append(f"| {name} | {n} | {ours} ({ours / n:.1%}) | {theirs} ({theirs / n:.1%}) |")
        total = [a + b for a, b in zip(total, (n, ours, theirs), strict=True)]
    n, ours, theirs = total
    lines.append(f"| all | {n} | {ours} ({ours / n:.1%}) | {theirs} ({theirs / n:.1%}) |")
    return "\n".join(lines)


def main() -> None:
    """Print the agreement tables and every case where either verdict misses."""
    result = agreement()
    print(_table("suite", result["suites"]))
    print()
    print(_table("kind", dict(sorted(result["kinds"].items()))))
    print()
    for suite, case, ours, theirs in result["misses"]:
        print(
            f"{suite} [{case.kind}] exp={case.expected} ours={ours} mv={theirs}: "
            f"gold={case.gold[:70]!r} pred={case.pred[:90]!r}"
        )


if __name__ == "__main__":
    main()
