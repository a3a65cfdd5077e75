"""The math reward of the ReNCE paper: boxed extraction + answer equivalence -> 1 / 0.1 / 0.

Public API::

    >>> from nemo_rence.rewards.math import score, is_equivalent
    >>> score(r"... so the answer is $\\boxed{\\dfrac{1}{2}}$.", "0.5").reward
    1.0
    >>> score(r"... \\boxed{3}", "4").reward      # boxed and wrong
    0.1
    >>> score("the answer is 4", "4").reward       # not boxed
    0.0
    >>> score(r"\\boxed{3}", "4", mode="binary").reward   # ConSPO's 1/0 reward
    0.0
    >>> is_equivalent(r"\\left(1, \\frac{1}{2}\\right)", "(1,0.5)")
    True

How equivalence is decided (:func:`equivalence`; docs/grader.md has the rules, the agreement
with math-verify on the public suites and the documented exceptions), cheapest first:

1. the answer each side states (:func:`answer_text`: its last box or run of boxes, else the text
   without math delimiters); a gold naming a multiple-choice letter is compared letter to letter;
2. exact string, then normalised string (:mod:`nemo_rence.rewards.normalize`); numbers
   (integers, thousands separators, a decimal comma against a number, fractions, decimals,
   percentages) as exact fractions; numeric tuples, intervals and sets element by element.
   "Equal" is final; "not equal" is final only for two bare answers (:func:`_is_answer`,
   :func:`_plain`), so a wrong number costs microseconds;
3. otherwise math-verify (``parse`` + ``verify``) on the two answers and, for texts, on the two
   texts, only for inputs that pass :func:`sympy_safe` (bounded length, nesting and exponents),
   because sympy can hang or exhaust memory on ``10^{10^{10^{10}}}`` and cannot be interrupted
   from inside a C-level big-integer power.

This module runs in-process (one call at a time, no hard time limit beyond math-verify's own
signal timeouts, which only work in the main thread). The trainer uses
:class:`nemo_rence.rewards.pool.GraderPool`, which runs the same :func:`score` in worker
processes with a hard per-item limit.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from nemo_rence.rewards.extract import (
    extract_boxed,
    extract_free_text,
    extract_last_boxes,
    strip_math_wrappers,
    text_after_last_box,
)
from nemo_rence.rewards.normalize import (
    MAX_FAST_CHARS,
    Number,
    normalize,
    numbers_equal,
    parse_choice,
    parse_decimal_comma,
    parse_number,
    split_sequence,
)

RewardMode = Literal["paper", "binary"]
REWARD_MODES: tuple[str, ...] = ("paper", "binary")

ExtractMode = Literal["boxed", "free_text"]
EXTRACT_MODES: tuple[str, ...] = ("boxed", "free_text")
"""How :func:`score` finds the answer of a response: "boxed" (the paper's reward: the last
``\\boxed{}``; an unboxed response scores 0) or "free_text" (benchmarks whose schema asks for a
free-text answer: the last box if any, else "the answer is ...", ``#### x`` or the last number,
:func:`~nemo_rence.rewards.extract.extract_free_text`; such an answer is graded like a boxed one,
while ``boxed`` stays False)."""

DEFAULT_MAX_CHARS = 32_768
"""Responses longer than this are truncated to their last ``DEFAULT_MAX_CHARS`` characters."""

MAX_SYMPY_CHARS = 512
"""Answers longer than this never reach sympy (compared by the fast path only)."""

MAX_SYMPY_DEPTH = 12
"""Maximum bracket nesting depth an answer may have to reach sympy (``\\frac`` bombs)."""

MAX_SYMPY_FRACS = 16
"""Maximum number of ``\\frac`` commands an answer may have to reach sympy."""

MAX_TEXT_CHARS = 4096
"""A whole text (a solution, not a bare answer) longer than this is never handed to math-verify;
:func:`is_equivalent` keeps the last ``MAX_TEXT_CHARS`` characters of longer texts."""

PAPER_REWARDS = (1.0, 0.1, 0.0)
"""(boxed and correct, boxed and wrong, not boxed): ReNCE section 4.1."""


@dataclass(frozen=True)
class RewardResult:
    """The reward of one response and how it was decided.

    Attributes:
        reward: 1 / 0.1 / 0 (``paper`` mode) or 1 / 0 (``binary`` mode).
        boxed: the response has a complete, non-empty last ``\\boxed{}``.
        correct: boxed and the boxed answer is equivalent to the gold answer.
        extracted: the boxed answer (None when not boxed).
        timed_out: grading hit the time limit (reward 0).
        truncated: the response was longer than the size limit; its tail was graded.
        error: the exception text when grading failed (reward 0), else "".
        method: what decided ``correct``: "unboxed", "string", "choice", "number",
            "sequence", "text", "sympy", "rejected" (failed the sympy safety check), "timeout",
            "error", "not_a_number" (:func:`enforce_answer_form`).
        elapsed_s: grading time in seconds (in the process that graded it).
    """

    reward: float
    boxed: bool
    correct: bool
    extracted: str | None
    timed_out: bool = False
    truncated: bool = False
    error: str = ""
    method: str = ""
    elapsed_s: float = 0.0


def reward_value(boxed: bool, correct: bool, mode: str = "paper") -> float:
    """Map (boxed, correct) to the scalar reward of ``mode`` ("paper": 1/0.1/0, "binary": 1/0)."""
    if mode == "paper":
        if not boxed:
            return PAPER_REWARDS[2]
        return PAPER_REWARDS[0] if correct else PAPER_REWARDS[1]
    if mode == "binary":
        return 1.0 if (boxed and correct) else 0.0
    raise ValueError(f"reward mode must be one of {REWARD_MODES}, got {mode!r}")


def failed_result(
    *, timed_out: bool, error: str = "", truncated: bool = False, elapsed_s: float = 0.0
) -> RewardResult:
    """The result of an item that could not be graded (time limit or crash): reward 0."""
    return RewardResult(
        reward=0.0,
        boxed=False,
        correct=False,
        extracted=None,
        timed_out=timed_out,
        truncated=truncated,
        error=error,
        method="timeout" if timed_out else "error",
        elapsed_s=elapsed_s,
    )


ANSWER_FORMS: tuple[str, ...] = ("any", "number")


def enforce_answer_form(result: RewardResult, form: str, mode: str = "paper") -> RewardResult:
    """Hold a correct answer to the form its task asks for (``record.metadata["answer_form"]``).

    ``"any"`` (the default; benchmarks): equivalence alone decides. ``"number"``: the boxed answer
    must also be written as a number (:func:`~nemo_rence.rewards.normalize.parse_number`: an
    integer, decimal, fraction, percentage, scientific notation; or a decimal comma, ``1,5``). A task whose problem is itself
    an expression needs this: for "Compute 5 + 3." the box ``\\boxed{5 + 3}`` is equivalent to 8
    (sympy), and a policy learns to copy the problem into the box. Such an answer scores as
    boxed and wrong, with ``method = "not_a_number"``.

    >>> r = score(r"\\boxed{5 + 3}", "8")
    >>> r.correct, enforce_answer_form(r, "number").reward
    (True, 0.1)
    >>> enforce_answer_form(score(r"\\boxed{8}", "8"), "number").reward
    1.0
    """
    if form not in ANSWER_FORMS:
        raise ValueError(f"answer_form must be one of {ANSWER_FORMS}, got {form!r}")
    if form == "any" or not result.correct or result.extracted is None:
        return result
    norm = normalize(strip_math_wrappers(result.extracted))
    if parse_number(norm) is not None:
        return result
    if not _SPACED_COMMA.search(result.extracted) and parse_decimal_comma(norm) is not None:
        return result
    return dataclasses.replace(
        result, correct=False, reward=reward_value(True, False, mode), method="not_a_number"
    )


def coerce_text(value: Any) -> str:
    """Turn whatever a caller passed as text into ``str`` without raising.

    ``bytes`` are decoded as UTF-8 with replacement (invalid UTF-8 never raises), ``None`` is
    ``""``, integral floats lose their ``.0`` (parquet stores AMC answers as floats), anything
    else goes through ``str``.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    try:
        return str(value)
    except Exception:
        return ""


def truncate_tail(text: str, max_chars: int) -> tuple[str, bool]:
    """Keep the last ``max_chars`` characters (the final answer is at the end)."""
    if len(text) <= max_chars:
        return text, False
    return text[len(text) - max_chars :], True


def gold_answer(gold: Any) -> str:
    """The gold answer as text: boxed golds (a MATH solution) are reduced to the box content."""
    text = coerce_text(gold).strip()
    if "\\boxed" in text or "\\fbox" in text:
        boxed = extract_boxed(text)
        if boxed is not None:
            return boxed
    return strip_math_wrappers(text)


# --------------------------------------------------------------------------------------------
# Equivalence
# --------------------------------------------------------------------------------------------

_WORD = re.compile(r"^[A-Za-z][A-Za-z ]*$")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_LETTER = re.compile(r"[A-Za-z]")
_POWER_CHAIN = re.compile(r"(?:\^|\*\*)\s*[0-9.]+\s*(?:\^|\*\*)")  # 10**10**10, 9^9^9
_EXPONENT = re.compile(r"(\^|\*\*)\s*(\{|\()?\s*[+-]?\s*([0-9]+)")
_FACTORIAL = re.compile(r"([0-9]{4,})\s*!")
_NESTED_FACTORIAL = re.compile(r"[)}!]\s*!")
_BIG_BINOM = re.compile(r"\\binom\s*\{[^{}]*(?:\}\s*\{[^{}]*)?(?:\^|[0-9]{5,}|!)")


def _max_depth(s: str) -> int:
    depth = best = 0
    for c in s:
        if c in "{([":
            depth += 1
            best = max(best, depth)
        elif c in "})]":
            depth = max(0, depth - 1)
    return best


def _exponent_groups(s: str) -> list[str]:
    """The text of each exponent in ``s`` (brace group or single token after ``^``/``**``)."""
    groups: list[str] = []
    i = 0
    n = len(s)
    while i < n:
        if s[i] == "^" or s.startswith("**", i):
            j = i + (1 if s[i] == "^" else 2)
            while j < n and s[j] == " ":
                j += 1
            if j < n and s[j] in "{(":
                depth, k = 0, j
                while k < n:
                    if s[k] in "{(":
                        depth += 1
                    elif s[k] in "})":
                        depth -= 1
                        if depth == 0:
                            break
                    k += 1
                groups.append(s[j : k + 1])
            else:
                groups.append(s[j : j + 1])
            i = j
        else:
            i += 1
    return groups


def sympy_safe(answer: str, max_chars: int = MAX_SYMPY_CHARS) -> bool:
    """Whether ``answer`` is small and tame enough to hand to sympy.

    Rejects: more than ``max_chars`` characters (``MAX_SYMPY_CHARS`` for an answer,
    ``MAX_TEXT_CHARS`` for a whole text that math-verify extracts from), nesting deeper than ``MAX_SYMPY_DEPTH``,
    more than ``MAX_SYMPY_FRACS`` ``\\frac``, numeric power towers (an exponent, at any depth,
    that contains a power and no variable), integer exponents above 999, more than 7 digits in
    all multi-digit exponents together (nested powers multiply), factorials of numbers with 4+
    digits, factorials of factorials or of groups, binomials of powers or 5+ digit numbers, and
    ungrouped power chains (``10**10**10``). A rejected answer is compared by the fast path
    only, so ``10^{10^{10}}`` can only equal an identical gold.
    """
    if len(answer) > max_chars:
        return False
    if _max_depth(answer) > MAX_SYMPY_DEPTH or answer.count("\\frac") > MAX_SYMPY_FRACS:
        return False
    if _POWER_CHAIN.search(answer):
        return False
    for group in _exponent_groups(answer):  # every exponent, nested ones included
        if ("^" in group or "**" in group) and not _LETTER.search(_COMMAND.sub("", group)):
            return False  # a numeric tower like 9^{9^{9}}; e^{x^{2}} stays symbolic and is fine
    magnitude = 0.0
    for m in _EXPONENT.finditer(answer):
        digits = m.group(3).lstrip("0")
        if len(digits) > 3:
            return False
        magnitude += len(digits) if len(digits) > 1 else 0
    if magnitude > 7:  # ((2^{999})^{999})^{999}: nested powers multiply their exponents
        return False
    return not (
        _FACTORIAL.search(answer) or _NESTED_FACTORIAL.search(answer) or _BIG_BINOM.search(answer)
    )


_SPACED_COMMA = re.compile(r"[0-9],\s")
_RELATION = re.compile(r"[=<>:]|\\(?:leq?|geq?|ne|neq|in|to)(?![A-Za-z])")
_VARIABLE = re.compile(r"[a-dfghj-zA-Z]")  # any Latin letter but e and i (constants)


def _has_variable(norm: str) -> bool:
    """Whether a normalised answer contains a free variable letter (LaTeX commands removed)."""
    return _VARIABLE.search(_COMMAND.sub("", norm)) is not None


def _all_numbers(items: list[str]) -> list[Any] | None:
    out = []
    for it in items:
        num = parse_number(it)
        if num is None:
            return None
        out.append(num)
    return out


def _as_number(norm: str, other_is_number: bool, thousands: bool = True) -> Number | None:
    """``norm`` as a number; a decimal comma (``1,22``) counts only against another number."""
    num = parse_number(norm, thousands)
    if num is None and other_is_number:
        num = parse_decimal_comma(norm)
    return num


def _fast_equivalence(pred: str, gold: str, precision: int = 6) -> tuple[bool | None, str]:
    """Decide cheaply: ``(True/False, method)``, or ``(None, "")`` when undecided."""
    if pred == gold:
        return True, "string"
    if len(pred) > MAX_FAST_CHARS or len(gold) > MAX_FAST_CHARS:
        return False, "string"
    pn, gn = normalize(pred), normalize(gold)
    if not pn or not gn:
        return False, "string"
    if pn == gn:
        return True, "string"
    gold_choice = parse_choice(gn)
    if gold_choice is not None:
        return parse_choice(pn) == gold_choice, "choice"
    g_thousands, p_thousands = (
        _SPACED_COMMA.search(gold) is None,
        _SPACED_COMMA.search(pred) is None,
    )
    gnum = _as_number(gn, parse_number(pn, p_thousands) is not None, g_thousands)
    pnum = _as_number(pn, gnum is not None, p_thousands)
    if gnum is None and pnum is not None:
        gnum = _as_number(gn, True, g_thousands)
    if gnum is not None and pnum is not None:
        return numbers_equal(pnum, gnum, precision), "number"
    gseq, pseq = split_sequence(gn), split_sequence(pn)
    # A number never equals a list / tuple / interval / set of 2+ items, nor a gold answer in a
    # free variable (math-verify's strict mode agrees; this only skips its cost). The converse
    # is not assumed: a prediction like "\sin^2 x + \cos^2 x" can equal the number 1.
    if pnum is not None and (gseq is not None or (_has_variable(gn) and not _RELATION.search(gn))):
        return False, "number"
    if gnum is not None and pseq is not None:
        return False, "sequence"
    if gseq is not None and pseq is not None and gseq[0] == pseq[0]:
        gnums, pnums = _all_numbers(gseq[1]), _all_numbers(pseq[1])
        if gnums is not None and pnums is not None:
            if len(gnums) != len(pnums):
                return False, "sequence"
            if gseq[0] in ("{}", ""):  # sets, and bare lists (solutions of an equation)
                remaining = list(gnums)
                for p in pnums:
                    hit = next((g for g in remaining if numbers_equal(p, g, precision)), None)
                    if hit is None:
                        return False, "sequence"
                    remaining.remove(hit)
                return True, "sequence"
            pairs = zip(pnums, gnums, strict=True)
            return all(numbers_equal(p, g, precision) for p, g in pairs), "sequence"
    if _WORD.match(pn) and _WORD.match(gn) and pn.lower() == gn.lower() and len(gn) > 1:
        return True, "text"
    return None, ""


_LOG = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def _mv_parse(text: str, view: str, timeout: int | None) -> tuple[Any, ...]:
    """math-verify's parse of ``text``: "answer" reads it as one boxed answer, "text" extracts
    the answer from a whole text the way math-verify's own tests do (LaTeX with boxes at no
    priority, then plain expressions, except in a text whose inline math is broken over lines:
    ``Answer $ \\n 9 \\n $`` is not inline LaTeX and is not read as ``9``)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs: list[Any]
    if view == "answer":
        text = "\\boxed{" + text + "}"
        configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    else:
        configs = [LatexExtractionConfig(boxed_match_priority=0)]
        if not _has_math_delimiters(text):
            configs.append(ExprExtractionConfig())
    return tuple(parse(text, extraction_config=configs, parsing_timeout=timeout))


_SPLIT_INLINE_MATH = re.compile(r"(?<![$\\])\$(?!\$)[^$]*\n[^$]*(?<![$\\])\$(?!\$)|\\\([^)]*\n")


def _has_math_delimiters(text: str) -> bool:
    """Whether a text has inline math (``$...$``, ``\\(...\\)``) broken over lines, which
    math-verify's LaTeX rules do not read; its plain-expression reader must not read it either."""
    return _SPLIT_INLINE_MATH.search(text) is not None


def _mv_equal(
    pred: str,
    gold: str,
    view: str,
    timeout: int | None,
    precision: int = 6,
    strict: bool = True,
    allow_set_relation_comp: bool = False,
) -> bool:
    from math_verify import verify

    gold_parsed = _mv_parse(gold, view, timeout)
    pred_parsed = _mv_parse(pred, view, timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(
        verify(
            list(gold_parsed),
            list(pred_parsed),
            float_rounding=precision,
            strict=strict,
            allow_set_relation_comp=allow_set_relation_comp,
            timeout_seconds=timeout,
        )
    )


def _math_verify_timeout(timeout_s: float | None) -> int | None:
    """math-verify's signal timeout, usable only in the main thread; None elsewhere."""
    if timeout_s is None or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, round(timeout_s))


# --------------------------------------------------------------------------------------------
# Texts: what answer a text states, multiple-choice letters, when the fast path is final
# --------------------------------------------------------------------------------------------


def answer_text(text: str) -> str:
    """The answer a text states: its last box (the last run of boxes joined by ", ", see
    :func:`~nemo_rence.rewards.extract.extract_last_boxes`), else the text without
    ``$``/``\\(``/``\\[`` wrappers.

    >>> answer_text(r"so $\\boxed{1}$ and $\\boxed{2}$")
    '1, 2'
    >>> answer_text("$ 9 $")
    '9'
    """
    if "\\boxed" in text or "\\fbox" in text:
        boxes = extract_last_boxes(text)
        if len(boxes) > 1:
            return ", ".join(boxes)
        last = extract_boxed(text)
        if last is not None:
            return last
        if boxes:
            return boxes[0]
    return strip_math_wrappers(text)


_GOLD_LETTER = re.compile(r"^\(?([A-E])\)?(?:[.:)。](?=\s|$)|\s+(?![=<>+*/^\\\d-])|$)")
_ANSWER_LETTER = re.compile(
    r"(?:answer|réponse|respuesta|antwort|答案|答)[^A-Za-z0-9\n]{0,4}(?:is\s+|est\s+|es\s+)?"
    r"(?:for\s+sure\s+|probably\s+)?[:：]?\s*\(?([A-E])\)?(?![A-Za-z])",
    re.IGNORECASE,
)
_LEADING_LETTER = re.compile(r"^\s*\(?([A-E])\)?(?=[\s.。:),，]|[^\x00-\x7f]|$)")


def _gold_letter(gold: str) -> str | None:
    """The multiple-choice letter a gold answer names (``C``, ``(C)``, ``C. Cecile``, ``(D)
    Alina``, "... the answer is (C) Cecile"), or None."""
    choice = parse_choice(normalize(gold)) if len(gold) <= 64 else None
    if choice is not None:
        return choice
    m = _GOLD_LETTER.match(gold.strip())
    if m is not None:
        return m.group(1)
    hits = _ANSWER_LETTER.findall(gold)
    return hits[-1].upper() if hits else None


def _pred_letter(pred: str) -> str | None:
    """The letter a response chooses: a bare letter, the last "answer is X" / "Answer: X" /
    "答案: X", a leading "D. ...", else math-verify's own letter extraction (A-D)."""
    choice = parse_choice(normalize(pred)) if len(pred) <= 64 else None
    if choice is not None:
        return choice
    hits = _ANSWER_LETTER.findall(pred)
    if hits:
        return str(hits[-1]).upper()
    m = _LEADING_LETTER.match(pred)
    if m is not None:
        return m.group(1)
    from math_verify import StringExtractionConfig, parse

    parsed = parse(pred[-MAX_TEXT_CHARS:], [StringExtractionConfig(lowercase=False)])
    return str(parsed[-1]).upper() if parsed else None


_PROSE = re.compile(r"[A-Za-z]{2,}")
_BOLD = re.compile(r"(?<![\w*])\*\*(?=\S)([^*\n]{1,100}?)(?<=\S)\*\*(?![\w*])")


def _unbold(text: str) -> str:
    """Markdown bold (``**92**``) removed, for the safety check only: ``**`` is also a power."""
    return _BOLD.sub(r"\1", text)


def _has_box(text: str) -> bool:
    return "\\boxed" in text or "\\fbox" in text


def _is_answer(text: str) -> bool:
    """Whether a text states its answer outright: a bare answer (one line, no words outside
    LaTeX commands, in at most one pair of math delimiters), or boxes with no number or math
    after the last one. Then a fast-path "not equal" is final; a solution that goes on to state
    "The final answer is $10,455$" after boxing an intermediate result is read by math-verify.
    """
    inner = strip_math_wrappers(text)
    if _has_box(inner):
        tail = text_after_last_box(inner)
        return tail is not None and not any(c.isdigit() or c in "$\\" for c in tail)
    return (
        len(inner) <= 200
        and inner.isascii()
        and not any(t in inner for t in ("$", "\n", "\\(", "\\["))
        and _PROSE.search(_COMMAND.sub("", inner)) is None
    )


_SENTENCE = re.compile(r"[^\W\d_]{3,}\s+[^\W\d_]{2,}")


def _delimited(text: str) -> bool:
    """Whether a text is written in math delimiters (``$...$``, ``\\(...\\)``, ``\\[...\\]``),
    which math-verify's LaTeX extraction reads as written; a bare ``2x+3`` is not handed to its
    text extraction, which would read only the ``2``."""
    stripped = text.strip()
    return stripped != strip_math_wrappers(stripped)


def _answer_like(text: str) -> bool:
    """Whether math-verify may read a text as one answer: it ends in a complete box, or it is
    one line without math delimiters that is not a sentence (two words in a row, any script)."""
    inner = strip_math_wrappers(text)
    if _has_box(inner):
        return _is_answer(inner)  # a complete box with no number or math after it
    return (
        len(inner) <= MAX_SYMPY_CHARS
        and not any(t in inner for t in ("$", "\n", "\\(", "\\["))
        and _SENTENCE.search(_COMMAND.sub(" ", inner)) is None
    )


def _plain(answer: str) -> bool:
    """Whether an answer is a bare mathematical answer (short ASCII, one line, no words outside
    LaTeX commands), so that a fast-path "not equal" is final. Anything else (prose, units in
    words, another script) is also shown to math-verify before it is ruled wrong."""
    return (
        len(answer) <= 200
        and answer.isascii()
        and "\n" not in answer
        and "$" not in answer
        and _PROSE.search(_COMMAND.sub("", answer)) is None
    )


def equivalence(
    pred: str,
    gold: str,
    *,
    use_sympy: bool = True,
    sympy_timeout_s: float | None = 5.0,
    precision: int = 6,
    strict: bool = True,
    allow_set_relation_comp: bool = False,
    texts: bool = True,
) -> tuple[bool, str]:
    """Whether the text ``pred`` states the same answer as the text ``gold``, and how decided.

    Both may be bare answers (a box's content) or whole texts (a solution, a sentence, an answer
    in ``$...$``); :func:`answer_text` reads the stated answer of each. In order:

    1. a gold that names a multiple-choice letter: the letter the prediction chooses decides;
    2. the fast path (:func:`_fast_equivalence`): "equal" is final; "not equal" is final only
       when both answers are :func:`_plain` (then math-verify agrees, and costs milliseconds);
    3. math-verify, for texts that pass :func:`sympy_safe`: equal if it says equal on the two
       answers, each read as one boxed answer (when both are answer-like, see
       :func:`_answer_like`), or, when either side is a text rather than a bare answer, on the
       two whole texts (extracted the way math-verify's own test suite does).

    Args:
        pred: the prediction (the boxed answer of a response, or a text).
        gold: the reference answer (or a solution with its answer boxed).
        use_sympy: fall back to math-verify when the fast path cannot decide.
        sympy_timeout_s: math-verify's own timeout (signal based: applied only when called
            from the main thread; the worker pool disables it and enforces its own limit).
        precision: decimal places numbers are rounded to when one side is a decimal
            (math-verify's ``float_rounding``).
        strict: math-verify's ``strict`` (variables must match by name).
        allow_set_relation_comp: math-verify's option letting a gold interval equal a relation.
        texts: whether ``pred`` and ``gold`` may be whole texts. :func:`score` passes False:
            its inputs are a box's content and a gold answer, never read as texts (so an answer
            longer than ``MAX_FAST_CHARS`` stays an exact-string comparison).

    Returns:
        ``(equal, method)``; see :class:`RewardResult` for the method names.

    Long on purpose: the decision order (fast path, then math-verify on the answer and on the
    whole text) reads top to bottom; each branch cites its suite case.
    """
    p, g = answer_text(pred), answer_text(gold)
    if not p or not g:
        return False, "string"
    letter = _gold_letter(g)
    if letter is not None:
        return _pred_letter(p) == letter, "choice"
    decided, method = _fast_equivalence(p, g, precision)
    # "Not equal" is final only for two bare answers: a text (a solution, "Answer $ 9 $") may
    # state its answer elsewhere than in its boxes, and math-verify reads it there.
    bare_p, bare_g = _is_answer(pred), _is_answer(gold)
    if decided is True or (decided is False and bare_p and bare_g and _plain(p) and _plain(g)):
        return decided, method
    if not use_sympy:
        return False, method or "string"
    mv_equal = functools.partial(
        _mv_equal,
        timeout=_math_verify_timeout(sympy_timeout_s),
        precision=precision,
        strict=strict,
        allow_set_relation_comp=allow_set_relation_comp,
    )
    p_safe, g_safe = strip_math_wrappers(p), strip_math_wrappers(g)
    tried = False
    answers = _answer_like(pred) and _answer_like(gold)
    if answers and sympy_safe(p_safe) and sympy_safe(g_safe):
        tried = True
        if mv_equal(p_safe, g_safe, "answer"):
            return True, "sympy"
    # Whole texts only where one is: a sentence, several lines, math in delimiters. A one-line
    # answer with a word in it ("97 \\text{ apples}+1") is an answer: math-verify's text reader
    # would take its first number.
    as_texts = texts and (not answers or _delimited(pred) or _delimited(gold))
    if (
        as_texts
        and sympy_safe(_unbold(pred), MAX_TEXT_CHARS)
        and sympy_safe(_unbold(gold), MAX_TEXT_CHARS)
    ):
        tried = True
        if mv_equal(pred, gold, "text"):
            return True, "sympy"
    return False, "sympy" if tried else "rejected"


def is_equivalent(
    pred: Any,
    gold: Any,
    *,
    precision: int = 6,
    strict: bool = True,
    allow_set_relation_comp: bool = False,
) -> bool:
    """Whether the prediction ``pred`` states an answer equivalent to the gold answer ``gold``.

    Either may be a bare answer, an answer in ``$...$`` / ``\\(...\\)`` / a box, several boxes
    meaning one answer, or a whole solution (its last ``MAX_TEXT_CHARS`` characters are read).
    See :func:`equivalence` for the rules and ``docs/grader.md`` for how the verdicts compare
    with math-verify's. Never raises; no code in either text is ever run.
    """
    try:
        p = coerce_text(pred)[-MAX_TEXT_CHARS:]
        g = coerce_text(gold)[-MAX_TEXT_CHARS:]
        return equivalence(
            p,
            g,
            precision=precision,
            strict=strict,
            allow_set_relation_comp=allow_set_relation_comp,
        )[0]
    except Exception:  # a grader must never take the trainer down
        _LOG.debug("equivalence failed", exc_info=True)
        return False


def _is_list_answer(answer: str) -> bool:
    """Whether a gold answer is a list of values: a set ``\\{1, 2\\}`` or items separated by
    top-level commas or semicolons (``1, 2``; ``(2, 2), (6, 2)``)."""
    norm = normalize(answer)
    if norm.startswith("\\{") and norm.endswith("\\}"):
        return True
    depth = 0
    for c in norm:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c in ",;" and depth == 0:
            return True
    return False


def score(
    response: str,
    gold: str,
    *,
    mode: RewardMode = "paper",
    max_chars: int = DEFAULT_MAX_CHARS,
    use_sympy: bool = True,
    sympy_timeout_s: float | None = 5.0,
    extract: ExtractMode = "boxed",
) -> RewardResult:
    """Grade one response against its gold answer (ReNCE section 4.1 reward).

    The last ``\\boxed{}`` decides. One exception, for golds that are a list of values
    (``1, 2``, ``\\{1, 2\\}``, ``(2, 2), (6, 2)``): when the last box alone is not the answer,
    the last run of boxes joined by connectors (``\\boxed{1}, \\boxed{2}``, ``\\boxed{(2, 2)}
    \\quad \\text{and} \\quad \\boxed{(6, 2)}``) is graded as one answer.

    Args:
        response: the model's full response text (bytes and None are tolerated).
        gold: the reference answer (a bare answer or a solution containing ``\\boxed{}``).
        mode: "paper" (1 boxed and correct / 0.1 boxed and wrong / 0 not boxed) or "binary"
            (1 boxed and correct / 0 otherwise, as ConSPO uses).
        max_chars: responses longer than this are graded on their last ``max_chars`` characters.
        use_sympy: allow the math-verify fallback for answers the fast path cannot decide.
        sympy_timeout_s: math-verify's own timeout in the main thread (see :func:`equivalence`).
        extract: "boxed" (the paper's reward) or "free_text" (see :data:`EXTRACT_MODES`).

    Returns:
        A :class:`RewardResult`. Never raises: a grading error yields reward 0 with ``error``.
    """
    if mode not in REWARD_MODES:
        raise ValueError(f"reward mode must be one of {REWARD_MODES}, got {mode!r}")
    if extract not in EXTRACT_MODES:
        raise ValueError(f"extract must be one of {EXTRACT_MODES}, got {extract!r}")
    start = time.perf_counter()
    truncated = False
    try:
        text, truncated = truncate_tail(coerce_text(response), max_chars)
        extracted = extract_boxed(text)
        boxed = extracted is not None
        if extracted is None and extract == "free_text":
            extracted = extract_free_text(text)
        if extracted is None:
            return RewardResult(
                reward=reward_value(False, False, mode),
                boxed=False,
                correct=False,
                extracted=None,
                truncated=truncated,
                method="unboxed",
                elapsed_s=time.perf_counter() - start,
            )
        gold_text = gold_answer(gold)
        grade = functools.partial(
            equivalence, use_sympy=use_sympy, sympy_timeout_s=sympy_timeout_s, texts=False
        )
        correct, method = grade(extracted, gold_text)
        if not correct and boxed and _is_list_answer(gold_text):
            run = extract_last_boxes(text)
            if len(run) > 1 and run[-1] == extracted:
                joined = ", ".join(run)
                correct, method = grade(joined, gold_text)
                extracted = joined if correct else extracted
        return RewardResult(
            reward=reward_value(True, correct, mode),
            boxed=boxed,
            correct=correct,
            extracted=extracted,
            truncated=truncated,
            method=method,
            elapsed_s=time.perf_counter() - start,
        )
    except Exception as exc:  # a grader must never take the trainer down
        _LOG.debug("grading failed", exc_info=True)
        return failed_result(
            timed_out=False,
            error=f"{type(exc).__name__}: {str(exc)[:200]}",
            truncated=truncated,
            elapsed_s=time.perf_counter() - start,
        )
