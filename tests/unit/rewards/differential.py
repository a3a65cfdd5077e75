"""Differential test corpus: realistic (pred, gold) answer pairs, graded by us and by math-verify.

:func:`corpus` generates pairs of many kinds from a seed (each kind yields equal and unequal
pairs); :func:`math_verify_says` is math-verify's own verdict with the extraction configs that
fit the input (LaTeX and plain expressions on the texts as written and on bare answers read as
inline math; the letter extraction for multiple-choice golds); :func:`compare` grades every pair
both ways and returns the per-kind agreement and the disagreements. Every disagreement must be
one of the deliberate exceptions of :data:`EXCEPTIONS` (documented in docs/grader.md).

Run ``python -m tests.unit.rewards.differential [n_per_kind]`` for the table.
"""

from __future__ import annotations

import random
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction
from typing import Any, NamedTuple

from nemo_rence.rewards.math import is_equivalent


class Pair(NamedTuple):
    kind: str
    pred: str
    gold: str


def _dec(x: Fraction, places: int) -> str:
    return f"{float(x):.{places}f}"


def _integers(r: random.Random) -> list[Pair]:
    n = r.randint(1000, 9_999_999)
    m = n + r.choice([1, -1, 10, 1000])
    return [
        Pair("integer", str(n), str(n)),
        Pair("integer", f"{n:,}", str(n)),
        Pair("integer", f"{n:,}".replace(",", " "), str(n)),
        Pair("integer", "+" + str(n), str(n)),
        Pair("integer", str(m), str(n)),
        Pair("integer", f"{m:,}", f"{n:,}"),
        Pair("integer", str(-n), str(n)),
    ]


def _decimals(r: random.Random) -> list[Pair]:
    a, b = r.randint(0, 999), r.randint(1, 99)
    x = f"{a}.{b:02d}"
    y = f"{a}.{(b + 7) % 100:02d}"
    return [
        Pair("decimal_dot", x, x),
        Pair("decimal_dot", x + "0", x),
        Pair("decimal_dot", y, x),
        Pair("decimal_dot", f"{a + 1000}.{b:02d}", f"{a + 1000:,}.{b:02d}"),
        Pair("decimal_comma", x.replace(".", ","), x),
        Pair("decimal_comma", x, x.replace(".", ",")),
        Pair("decimal_comma", y.replace(".", ","), x),
        Pair("decimal_comma", f"0,{b:02d}", f"0.{b:02d}"),
    ]


def _fractions(r: random.Random) -> list[Pair]:
    a, b = r.randint(1, 50), r.randint(2, 60)
    k = r.randint(2, 5)
    q = Fraction(a, b)
    return [
        Pair("fraction", rf"\frac{{{a}}}{{{b}}}", f"{a}/{b}"),
        Pair("fraction", rf"\dfrac{{{a * k}}}{{{b * k}}}", rf"\frac{{{a}}}{{{b}}}"),
        Pair("fraction", rf"\frac{{{a + 1}}}{{{b}}}", rf"\frac{{{a}}}{{{b}}}"),
        Pair("fraction", rf"-\frac{{{a}}}{{{b}}}", rf"\frac{{-{a}}}{{{b}}}"),
        Pair("approximation", _dec(q, 6), rf"\frac{{{a}}}{{{b}}}"),
        Pair("approximation", _dec(q, 2) + "1", rf"\frac{{{a}}}{{{b}}}"),
    ]


def _latex(r: random.Random) -> list[Pair]:
    n = r.randint(2, 500)
    return [
        Pair("latex", f"${n}$", str(n)),
        Pair("latex", f"$ {n} $", str(n)),
        Pair("latex", rf"\( {n} \)", str(n)),
        Pair("latex", rf"\[ {n} \]", str(n)),
        Pair("latex", rf"\boxed{{{n}}}", str(n)),
        Pair("latex", rf"\left( {n} \right)", str(n)),
        Pair("latex", rf"\mathbf{{{n}}}", str(n)),
        Pair("latex", rf"\( {n + 1} \)", str(n)),
        Pair("latex", rf"\sqrt{{{n * n}}}", str(n)),
        Pair("latex", rf"\sqrt{{{n * n + 1}}}", str(n)),
    ]


def _units(r: random.Random) -> list[Pair]:
    n = r.randint(2, 500)
    return [
        Pair("units", rf"{n} \text{{ cm}}", str(n)),
        Pair("units", rf"{n}\text{{ meters}}", str(n)),
        Pair("units", rf"{n}^\circ", str(n)),
        Pair("units", rf"\${n}", str(n)),
        Pair("units", f"{n} dollars", str(n)),
        Pair("units", rf"{n}\%", str(n)),
        Pair("units", rf"{n}\%", _dec(Fraction(n, 100), 2)),
        Pair("units", rf"{n + 1} \text{{ cm}}", str(n)),
        Pair("units", rf"{n} \text{{ cm}}+1", str(n)),
    ]


def _intervals(r: random.Random) -> list[Pair]:
    a = r.randint(-20, 5)
    b = a + r.randint(1, 20)
    return [
        Pair("interval", f"({a}, {b}]", f"({a},{b}]"),
        Pair("interval", rf"\left[{a}, {b}\right)", f"[{a},{b})"),
        Pair("interval", f"[{a}, {b}]", f"({a},{b})"),
        Pair("interval", rf"(-\infty, {b})", rf"(-\infty,{b})"),
        Pair("interval", rf"(-\infty, {a}) \cup ({b}, \infty)", rf"(-\infty,{a})\cup({b},\infty)"),
        Pair("interval", f"({a}, {b + 1}]", f"({a},{b}]"),
        Pair("relation", rf"x \in [{a}, {b}]", rf"{a} \le x \le {b}"),
        Pair("relation", rf"x \neq {b}", f"x != {b}"),
    ]


def _sets_tuples(r: random.Random) -> list[Pair]:
    a, b, c = r.sample(range(-9, 30), 3)
    return [
        Pair("set", rf"\{{{a}, {b}, {c}\}}", rf"\{{{c},{a},{b}\}}"),
        Pair("set", f"{a}, {b}, {c}", f"{c}, {b}, {a}"),
        Pair("set", rf"\{{{a}, {b}\}}", rf"\{{{a},{b},{c}\}}"),
        Pair("tuple", f"({a}, {b})", f"({a},{b})"),
        Pair("tuple", rf"\left({a}, \frac{{{b}}}{{2}}\right)", f"({a},{b / 2})"),
        Pair("tuple", f"({b}, {a})", f"({a},{b})"),
        Pair("multi_box", rf"\boxed{{{a}}}, \boxed{{{b}}}", f"{a}, {b}"),
        Pair(
            "multi_box",
            rf"\boxed{{({a}, {b})}} \quad \text{{and}} \quad \boxed{{({c}, {a})}}",
            f"({a}, {b}), ({c}, {a})",
        ),
    ]


def _matrices(r: random.Random) -> list[Pair]:
    a, b, c, d = (r.randint(-9, 9) for _ in range(4))
    m = rf"\begin{{pmatrix}} {a} & {b} \\ {c} & {d} \end{{pmatrix}}"
    return [
        Pair("matrix", m, m.replace(" ", "")),
        Pair("matrix", m.replace("pmatrix", "bmatrix"), m),
        Pair("matrix", m.replace(f"{d} \\end", f"{d + 1} \\end"), m),
    ]


def _equations(r: random.Random) -> list[Pair]:
    a, b = r.randint(2, 9), r.randint(1, 20)
    return [
        Pair("equation", f"x = {b}", str(b)),
        Pair("equation", f"y = {a}x + {b}", f"y = {b} + {a}x"),
        Pair("equation", f"y = {a}x + {b + 1}", f"y = {a}x + {b}"),
        Pair("symbolic", f"x^2 + {a}x", f"{a}x + x^2"),
        Pair("symbolic", rf"\sqrt{{{4 * a}}}", rf"2\sqrt{{{a}}}"),
        Pair("symbolic", f"x^2 + {a + 1}x", f"{a}x + x^2"),
    ]


def _letters(r: random.Random) -> list[Pair]:
    g, w = r.sample("ABCD", 2)
    return [
        Pair("letter", g, g),
        Pair("letter", f"({g})", g),
        Pair("letter", f"The answer is {g}.", g),
        Pair("letter", f"Answer: {g}", g),
        Pair("letter", f"The answer is {w}.", g),
        Pair("letter", w, g),
    ]


def _free_text(r: random.Random) -> list[Pair]:
    n = r.randint(2, 999)
    return [
        Pair("free_text", f"Adding them up gives {n - 1} + 1 = {n}. So the answer is {n}.", str(n)),
        Pair("free_text", f"We find $x = {n}$.", str(n)),
        Pair("free_text", f"So the answer is {n + 1}.", str(n)),
    ]


GENERATORS: tuple[Callable[[random.Random], list[Pair]], ...] = (
    _integers,
    _decimals,
    _fractions,
    _latex,
    _units,
    _intervals,
    _sets_tuples,
    _matrices,
    _equations,
    _letters,
    _free_text,
)


def corpus(rounds: int = 20, seed: int = 0) -> list[Pair]:
    """``rounds`` draws of every generator (74 pairs a round), deterministic in ``seed``."""
    r = random.Random(seed)
    return [pair for _ in range(rounds) for gen in GENERATORS for pair in gen(r)]


def math_verify_says(pred: str, gold: str) -> bool:
    """math-verify's verdict with the configs that fit the input: equal if ``verify`` says so on
    the texts as written or on bare answers read as inline math (``$...$``), with LaTeX and plain
    expression extraction, or (for a multiple-choice gold) with its letter extraction."""
    from math_verify import (
        ExprExtractionConfig,
        LatexExtractionConfig,
        StringExtractionConfig,
        parse,
        verify,
    )

    configs: list[Any] = [LatexExtractionConfig(), ExprExtractionConfig()]
    views = [(pred, gold)]
    if "$" not in pred + gold:
        views.append((f"${pred}$", f"${gold}$"))
    for p, g in views:
        if verify(parse(g, configs), parse(p, configs)):
            return True
    if gold.strip() in ("A", "B", "C", "D", "(A)", "(B)", "(C)", "(D)"):
        letters = [StringExtractionConfig()]
        return bool(verify(parse(gold, letters), parse(pred, letters)))
    return False


_ESCAPED_DOLLAR = re.compile(r"^\\\$\s*[0-9][0-9,.]*$")
_PERCENT = re.compile(r"^[0-9.]+\s*\\?%$")


def _currency(pair: Pair, ours: bool, theirs: bool) -> bool:
    """``\\$403`` (LaTeX's escaped dollar: a currency sign) equals 403 for us; math-verify
    drops a bare ``$`` before a number but not the escaped one."""
    return ours and not theirs and bool(_ESCAPED_DOLLAR.match(pair.pred.strip()))


def _percent_ratio(pair: Pair, ours: bool, theirs: bool) -> bool:
    """``403\\%`` equals 4.03 for us (a percentage is also its ratio: 50% = 0.5), as well as 403;
    math-verify accepts only 403."""
    if not (ours and not theirs and _PERCENT.match(pair.pred.strip())):
        return False
    number = float(pair.pred.strip().rstrip("%").rstrip("\\"))
    return abs(number / 100 - float(pair.gold)) < 1e-9


_UNIT_THEN_MORE = re.compile(r"^[0-9]+\s*\\text\{[^{}]*\}\s*[+*/-]")


def _first_number(pair: Pair, ours: bool, theirs: bool) -> bool:
    """``97 \\text{ cm}+1`` is not 97 for us: math-verify's text reader stops at the first
    number of a one-line answer that has a word in it."""
    return theirs and not ours and bool(_UNIT_THEN_MORE.match(pair.pred.strip()))


EXCEPTIONS: dict[str, Callable[[Pair, bool, bool], bool]] = {
    # The kinds of pair on which our verdict deliberately differs from math-verify's, each with
    # its reason in docs/grader.md and a test in test_reward_differential.py.
    "currency": _currency,
    "percent_ratio": _percent_ratio,
    "first_number": _first_number,
}


def compare(pairs: list[Pair]) -> dict[str, Any]:
    """Grade every pair both ways: per kind [pairs, agreements], and the disagreements."""
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    disagreements: list[tuple[Pair, bool, bool, str]] = []
    for pair in pairs:
        ours = is_equivalent(pair.pred, pair.gold)
        theirs = math_verify_says(pair.pred, pair.gold)
        kinds[pair.kind][0] += 1
        kinds[pair.kind][1] += ours == theirs
        if ours != theirs:
            reason = next((k for k, test in EXCEPTIONS.items() if test(pair, ours, theirs)), "")
            disagreements.append((pair, ours, theirs, reason))
    return {"kinds": dict(kinds), "disagreements": disagreements}


def main() -> None:
    """Print the per-kind agreement table and every disagreement with its exception."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    result = compare(corpus(rounds))
    print("| kind | pairs | ours = math-verify |\n|---|---|---|")
    total = [0, 0]
    for kind, (n, agree) in sorted(result["kinds"].items()):
        print(f"| {kind} | {n} | {agree} ({agree / n:.1%}) |")
        total = [total[0] + n, total[1] + agree]
    print(f"| all | {total[0]} | {total[1]} ({total[1] / total[0]:.1%}) |")
    for pair, ours, theirs, reason in result["disagreements"]:
        print(
            f"[{pair.kind}] ours={ours} mv={theirs} {reason or 'UNDOCUMENTED'}: "
            f"pred={pair.pred!r} gold={pair.gold!r}"
        )


if __name__ == "__main__":
    main()
