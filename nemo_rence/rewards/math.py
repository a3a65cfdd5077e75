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

How equivalence is decided (:func:`equivalence`), cheapest first:

1. exact string, then normalised string (:mod:`nemo_rence.rewards.normalize`);
2. multiple-choice letters; numbers (integers, fractions, decimals, percentages) as exact
   fractions; comma lists, tuples, intervals and sets of numbers element by element. These are
   *decisive*: two numbers that differ are wrong without asking sympy;
3. otherwise math-verify (``parse`` + ``verify``), only for inputs that pass :func:`sympy_safe`
   (bounded length, nesting and exponents), because sympy can hang or exhaust memory on
   ``10^{10^{10^{10}}}`` and cannot be interrupted from inside a C-level big-integer power.

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

from nemo_rence.rewards.extract import extract_boxed, strip_math_wrappers
from nemo_rence.rewards.normalize import (
    MAX_FAST_CHARS,
    normalize,
    numbers_equal,
    parse_choice,
    parse_number,
    split_sequence,
)

RewardMode = Literal["paper", "binary"]
REWARD_MODES: tuple[str, ...] = ("paper", "binary")

DEFAULT_MAX_CHARS = 32_768
"""Responses longer than this are truncated to their last ``DEFAULT_MAX_CHARS`` characters."""

MAX_SYMPY_CHARS = 512
"""Answers longer than this never reach sympy (compared by the fast path only)."""

MAX_SYMPY_DEPTH = 12
"""Maximum bracket nesting depth an answer may have to reach sympy (``\\frac`` bombs)."""

MAX_SYMPY_FRACS = 16
"""Maximum number of ``\\frac`` commands an answer may have to reach sympy."""

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
    integer, decimal, fraction, percentage, scientific notation). A task whose problem is itself
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
    if parse_number(normalize(strip_math_wrappers(result.extracted))) is not None:
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


def sympy_safe(answer: str) -> bool:
    """Whether ``answer`` is small and tame enough to hand to sympy.

    Rejects: more than ``MAX_SYMPY_CHARS`` characters, nesting deeper than ``MAX_SYMPY_DEPTH``,
    more than ``MAX_SYMPY_FRACS`` ``\\frac``, numeric power towers (an exponent, at any depth,
    that contains a power and no variable), integer exponents above 999, more than 7 digits in
    all multi-digit exponents together (nested powers multiply), factorials of numbers with 4+
    digits, factorials of factorials or of groups, binomials of powers or 5+ digit numbers, and
    ungrouped power chains (``10**10**10``). A rejected answer is compared by the fast path
    only, so ``10^{10^{10}}`` can only equal an identical gold.
    """
    if len(answer) > MAX_SYMPY_CHARS:
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


def _fast_equivalence(pred: str, gold: str) -> tuple[bool | None, str]:
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
    gnum, pnum = parse_number(gn), parse_number(pn)
    if gnum is not None and pnum is not None:
        return numbers_equal(pnum, gnum), "number"
    gseq, pseq = split_sequence(gn), split_sequence(pn)
    # A number never equals a list / tuple / interval / set of 2+ items, nor a gold answer in a
    # free variable (math-verify's strict mode agrees; this only skips its cost). The converse
    # is not assumed: a prediction like "\sin^2 x + \cos^2 x" can equal the number 1.
    if pnum is not None and (gseq is not None or _has_variable(gn)):
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
                    hit = next((g for g in remaining if numbers_equal(p, g)), None)
                    if hit is None:
                        return False, "sequence"
                    remaining.remove(hit)
                return True, "sequence"
            return all(numbers_equal(p, g) for p, g in zip(pnums, gnums, strict=True)), "sequence"
    if _WORD.match(pn) and _WORD.match(gn) and pn.lower() == gn.lower() and len(gn) > 1:
        return True, "text"
    return None, ""


_LOG = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def _mv_parse(answer: str, timeout: int | None) -> tuple[Any, ...]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    parsed = parse(
        "\\boxed{" + answer + "}",
        extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=timeout,
    )
    return tuple(parsed)


def _sympy_equivalence(pred: str, gold: str, timeout: int | None) -> bool:
    from math_verify import verify

    gold_parsed = _mv_parse(gold, timeout)
    pred_parsed = _mv_parse(pred, timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=timeout))


def _math_verify_timeout(timeout_s: float | None) -> int | None:
    """math-verify's signal timeout, usable only in the main thread; None elsewhere."""
    if timeout_s is None or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, round(timeout_s))


def equivalence(
    pred: str, gold: str, *, use_sympy: bool = True, sympy_timeout_s: float | None = 5.0
) -> tuple[bool, str]:
    """Whether answer ``pred`` equals answer ``gold``, and which method decided.

    Args:
        pred: the extracted (boxed) answer of the response.
        gold: the reference answer.
        use_sympy: fall back to math-verify when the fast path cannot decide.
        sympy_timeout_s: math-verify's own timeout (signal based: applied only when called
            from the main thread; the worker pool disables it and enforces its own limit).

    Returns:
        ``(equal, method)``; see :class:`RewardResult` for the method names.
    """
    decided, method = _fast_equivalence(pred, gold)
    if decided is not None:
        return decided, method
    if not use_sympy:
        return False, "string"
    p, g = strip_math_wrappers(pred), strip_math_wrappers(gold)
    if not (sympy_safe(p) and sympy_safe(g)):
        return False, "rejected"
    return _sympy_equivalence(p, g, _math_verify_timeout(sympy_timeout_s)), "sympy"


def is_equivalent(pred: str, gold: str) -> bool:
    """Whether the answer ``pred`` is mathematically equivalent to the answer ``gold``.

    Both are final answers, not whole responses; either may still be wrapped in ``$...$`` or a
    ``\\boxed{}``, which is removed the same way for both. Never raises.
    """
    try:
        return equivalence(gold_answer(pred), gold_answer(gold))[0]
    except Exception:  # a grader must never take the trainer down
        _LOG.debug("equivalence failed", exc_info=True)
        return False


def score(
    response: str,
    gold: str,
    *,
    mode: RewardMode = "paper",
    max_chars: int = DEFAULT_MAX_CHARS,
    use_sympy: bool = True,
    sympy_timeout_s: float | None = 5.0,
) -> RewardResult:
    """Grade one response against its gold answer (ReNCE section 4.1 reward).

    Args:
        response: the model's full response text (bytes and None are tolerated).
        gold: the reference answer (a bare answer or a solution containing ``\\boxed{}``).
        mode: "paper" (1 boxed and correct / 0.1 boxed and wrong / 0 not boxed) or "binary"
            (1 boxed and correct / 0 otherwise, as ConSPO uses).
        max_chars: responses longer than this are graded on their last ``max_chars`` characters.
        use_sympy: allow the math-verify fallback for answers the fast path cannot decide.
        sympy_timeout_s: math-verify's own timeout in the main thread (see :func:`equivalence`).

    Returns:
        A :class:`RewardResult`. Never raises: a grading error yields reward 0 with ``error``.
    """
    if mode not in REWARD_MODES:
        raise ValueError(f"reward mode must be one of {REWARD_MODES}, got {mode!r}")
    start = time.perf_counter()
    truncated = False
    try:
        text, truncated = truncate_tail(coerce_text(response), max_chars)
        extracted = extract_boxed(text)
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
        correct, method = equivalence(
            extracted, gold_answer(gold), use_sympy=use_sympy, sympy_timeout_s=sympy_timeout_s
        )
        return RewardResult(
            reward=reward_value(True, correct, mode),
            boxed=True,
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
