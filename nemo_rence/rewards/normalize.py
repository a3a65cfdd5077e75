"""String normalisation and the exact fast path of the equivalence check.

Everything here is linear-time string code on bounded input (callers cap answers at
``MAX_FAST_CHARS``), so it can run anywhere, including the trainer's own process.

Two layers:

- :func:`normalize` rewrites LaTeX spellings that never change the value (``\\dfrac`` ->
  ``\\frac``, ``\\left(`` -> ``(``, ``^\\circ``, ``\\text{ cm}`` units, ``\\!``, spaces ...).
- :func:`parse_number` reads integers, thousands separators, decimals, fractions, percentages
  and ``a \\times 10^{n}`` into an exact :class:`fractions.Fraction`, so that number-vs-number
  comparisons (most of the answers of DAPO, AIME, AMC) are decided in microseconds, both ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_FAST_CHARS = 1000
"""Answers longer than this are compared as exact strings only (never parsed)."""

_MAX_DIGITS = 400
"""Number literals with more digits are not parsed (``int()`` of huge strings is quadratic)."""

_MAX_EXP10 = 400
"""``a \\times 10^{n}`` is parsed only for ``|n| <= _MAX_EXP10``."""

# Tokens removed outright: spacing commands, sizing, display style.
_DROP = (
    "\\left",
    "\\right",
    "\\bigl",
    "\\bigr",
    "\\Bigl",
    "\\Bigr",
    "\\big",
    "\\Big",
    "\\displaystyle",
    "\\textstyle",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\quad",
    "\\qquad",
    "\\ ",
    "~",
)
_RENAME = (
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("\\cfrac", "\\frac"),
    ("\\dbinom", "\\binom"),
    ("\\tbinom", "\\binom"),
    ("\\le ", "\\leq "),
    ("\\ge ", "\\geq "),
    ("\\neq", "\\ne"),
    ("{,}", ","),
    ("\\lbrace", "\\{"),
    ("\\rbrace", "\\}"),
    ("\\lvert", "|"),
    ("\\rvert", "|"),
)
_DEGREES = ("^{\\circ}", "^\\circ", "\\circ", "°", "\\degree")

_TEXT_CMD = re.compile(
    r"\\(?:text|textrm|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}"
)
_UNIT_WORD = re.compile(
    r"(?<=[\d}])\s+(?:square\s+)?(?:units?|degrees?|cm|mm|km|meters?|inches|inch|feet|foot|"
    r"miles?|seconds?|minutes?|hours?|days?|dollars?|cents?)\s*(?:\^\{?[23]\}?)?\s*$"
)
_ASSIGN = re.compile(r"^(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?[A-Za-z0-9]+\}?)?\s*=\s*(?=[^=]+$)")
_SHORT_FRAC = re.compile(r"\\frac\s*([0-9A-Za-z])\s*([0-9A-Za-z])")
_HALF_FRAC = re.compile(r"\\frac\s*\{([^{}]*)\}\s*([0-9A-Za-z])")
_SHORT_SQRT = re.compile(r"\\sqrt\s*([0-9A-Za-z])")
_SHORT_SUP = re.compile(r"([_^])\s*([0-9A-Za-z])")


def _strip_dollars(s: str) -> str:
    s = s.replace("\\$", "")
    # Dollar signs left after wrapper stripping are math delimiters or currency: neither matters.
    return s.replace("$", "")


def normalize(answer: str) -> str:
    """Return a canonical spelling of ``answer`` for exact comparison.

    The rewrite is conservative: two answers with equal normal forms are equal in value, never the
    other way round being assumed. Whitespace is removed entirely.

    Example::

        >>> normalize(r"\\left( \\dfrac{1}{2}, 3 \\right)")
        '(\\\\frac{1}{2},3)'
    """
    s = _strip_dollars(answer.strip())
    for tok in _DROP:
        s = s.replace(tok, " " if tok.endswith(" ") else "")
    for old, new in _RENAME:
        s = s.replace(old, new)
    for deg in _DEGREES:
        s = s.replace(deg, "")
    s = s.replace("\\%", "%")
    # \text{...}: a trailing unit after a number is dropped, any other text keeps its content.
    s = _TEXT_CMD.sub(lambda m: "\x00" + m.group(1) + "\x01", s)
    s = re.sub(r"(?<=[\d}.])\s*\x00[^\x00\x01]*\x01\s*$", "", s)
    s = s.replace("\x00", "").replace("\x01", "")
    s = _UNIT_WORD.sub("", s)
    s = s.strip().rstrip(".").strip()
    s = _ASSIGN.sub("", s, count=1)
    s = _SHORT_FRAC.sub(r"\\frac{\1}{\2}", s)
    s = _HALF_FRAC.sub(r"\\frac{\1}{\2}", s)
    s = _SHORT_SQRT.sub(r"\\sqrt{\1}", s)
    s = _SHORT_SUP.sub(r"\1{\2}", s)
    s = "".join(s.split())
    return s


@dataclass(frozen=True)
class Number:
    """An exactly parsed number.

    Attributes:
        value: the exact value (percent sign removed: ``50%`` has value 50).
        decimal: True when written with a decimal point (then compared after rounding to 6
            places, as math-verify does, so ``0.333333 == 1/3``).
        percent: True when written with a percent sign (then ``50% == 50`` and ``50% == 0.5``).
    """

    value: Fraction
    decimal: bool = False
    percent: bool = False


_INT = r"[0-9]{1," + str(_MAX_DIGITS) + "}"
_THOUSANDS = r"[1-9][0-9]{0,2}(?:,[0-9]{3})+"
_DEC = "(?:" + _THOUSANDS + "|" + _INT + r")?\.[0-9]{1," + str(_MAX_DIGITS) + "}|" + _INT + r"\."
_UNSIGNED = "(?:" + _DEC + "|" + _THOUSANDS + "|" + _INT + ")"
_RE_PLAIN = re.compile(r"^([+-]?)(" + _UNSIGNED + ")$")
_RE_SCI = re.compile(
    r"^([+-]?)(" + _UNSIGNED + r")(?:\\times|\\cdot|\*)10\^\{?([+-]?[0-9]{1,4})\}?$"
)
_RE_FRAC = re.compile(
    r"^([+-]?)\\frac\{([+-]?)(" + _UNSIGNED + r")\}\{([+-]?)(" + _UNSIGNED + r")\}$"
)
_RE_SLASH = re.compile(
    r"^([+-]?)\(?([+-]?)(" + _UNSIGNED + r")\)?/\(?([+-]?)(" + _UNSIGNED + r")\)?$"
)


def _lit(text: str) -> tuple[Fraction, bool]:
    """Exact value of an unsigned literal and whether it had a decimal point."""
    text = text.replace(",", "")
    return Fraction(text), "." in text


def _sign(*signs: str) -> int:
    return -1 if sum(s == "-" for s in signs) % 2 else 1


def parse_number(norm: str, thousands: bool = True) -> Number | None:
    """Parse a *normalised* answer (see :func:`normalize`) as an exact number, or return None.

    Accepted: ``-12``, ``1,000``, ``3.50``, ``.5``, ``\\frac{3}{4}``, ``-\\frac{-3}{4}``, ``3/4``,
    ``12%``, ``1.5\\times10^{3}``. Anything else (symbols, ``\\sqrt``, towers) returns None and
    is left to the symbolic checker. With ``thousands=False`` (the raw answer had a space after
    a comma: ``32, 349`` is a list) a comma never separates thousands.
    """
    if not norm or len(norm) > 2 * _MAX_DIGITS + 64:
        return None
    if not thousands and "," in norm:
        return None
    percent = norm.endswith("%")
    s = norm[:-1] if percent else norm
    try:
        m = _RE_PLAIN.match(s)
        if m:
            val, dec = _lit(m.group(2))
            return Number(_sign(m.group(1)) * val, dec, percent)
        m = _RE_FRAC.match(s) or _RE_SLASH.match(s)
        if m:
            num, dnum = _lit(m.group(3))
            den, dden = _lit(m.group(5))
            if den == 0:
                return None
            sign = _sign(m.group(1), m.group(2), m.group(4))
            return Number(sign * num / den, dnum or dden, percent)
        m = _RE_SCI.match(s)
        if m:
            exp = int(m.group(3))
            if abs(exp) > _MAX_EXP10:
                return None
            val, dec = _lit(m.group(2))
            return Number(_sign(m.group(1)) * val * Fraction(10) ** exp, dec, percent)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


_RE_DECIMAL_COMMA = re.compile(r"^([+-]?)([0-9]{1,30}),([0-9]{1,30})$")


def parse_decimal_comma(norm: str) -> Number | None:
    """Read ``1,22`` / ``1000,99`` / ``0,111`` as a decimal with a comma, or return None.

    A single comma is a decimal comma when it is not followed by exactly three digits
    (``12,345`` is a thousands separator) or when the integer part is ``0``. This is how
    math-verify reads a bare number; callers use it only when the other side is a number (a box
    holding ``1,2`` next to a list gold stays the list ``1, 2``).
    """
    m = _RE_DECIMAL_COMMA.match(norm)
    if m is None or (len(m.group(3)) == 3 and m.group(2) != "0"):
        return None
    value = Fraction(m.group(2) + "." + m.group(3))
    return Number(-value if m.group(1) == "-" else value, decimal=True)


def numbers_equal(pred: Number, gold: Number, precision: int = 6) -> bool:
    """Compare two parsed numbers the way math-verify does, exactly and in microseconds.

    - Exact values compare exactly (``\\frac{2}{4} == 0.5`` is exact too: 0.5 is a decimal).
    - If either side was written as a decimal, both are rounded to ``precision`` places first
      (math-verify's ``float_rounding``, 6 by default).
    - A percent on either side also accepts the value divided by 100 (``50% == 0.5``) or with the
      sign dropped (``50% == 50``).
    """
    golds = [gold.value]
    preds = [pred.value]
    if gold.percent:
        golds.append(gold.value / 100)
    if pred.percent:
        preds.append(pred.value / 100)
    rounded = pred.decimal or gold.decimal
    for g in golds:
        for p in preds:
            if p == g:
                return True
            if rounded and round(p, precision) == round(g, precision):
                return True
    return False


_CHOICE = re.compile(r"^\(?([A-Ea-e])\)?$")
_CHOICE_PREFIX = re.compile(r"^\(([A-E])\)")


def parse_choice(norm: str) -> str | None:
    """Multiple-choice letter of a normalised answer: ``C``, ``(C)``, ``(C)12`` -> ``"C"``."""
    m = _CHOICE.match(norm)
    if m:
        return m.group(1).upper()
    m = _CHOICE_PREFIX.match(norm)
    return m.group(1) if m else None


_OPEN = {"(": ")", "[": "]", "\\{": "\\}"}


def split_sequence(norm: str) -> tuple[str, list[str]] | None:
    """Split ``(a,b)``, ``[a,b)``, ``\\{a,b\\}`` or a bare ``a,b`` at top-level commas.

    Returns ``(brackets, items)`` where ``brackets`` is the opening and closing bracket pair
    (``""`` for a bare list), or None when the string is not a comma-separated sequence.
    """
    brackets = ""
    body = norm
    if norm.startswith("\\{") and norm.endswith("\\}"):
        brackets, body = "{}", norm[2:-2]
    elif len(norm) >= 2 and norm[0] in "([" and norm[-1] in ")]":
        brackets, body = norm[0] + norm[-1], norm[1:-1]
    items: list[str] = []
    depth = 0
    last = 0
    for i, c in enumerate(body):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif c == "," and depth == 0:
            items.append(body[last:i])
            last = i + 1
    items.append(body[last:])
    if depth != 0 or len(items) < 2 or any(not it for it in items):
        return None
    return brackets, items
