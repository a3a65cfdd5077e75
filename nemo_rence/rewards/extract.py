"""Final-answer extraction: the last ``\\boxed{...}`` of a response.

The paper's reward (ReNCE section 4.1) asks whether a rollout "wraps the final answer in
``\\boxed{}``". This module answers that question and returns the boxed text. It is pure string
code, linear in the input length, with no regular expression that can backtrack, so it is safe on
hostile input of any size (10,000 nested braces, 1 MB responses).

Rules (each one has a test in ``tests/unit/rewards/test_reward_extract.py``):

- The *last* box marker decides: ``\\boxed{``, ``\\boxed {``, ``\\fbox{`` (and ``\\boxed x``,
  where LaTeX boxes the next token; we take the next run of non-space characters up to ``$``).
- Braces nest arbitrarily; escaped braces ``\\{`` ``\\}`` do not count as grouping braces.
- An unterminated last box (a truncated rollout) is *not boxed*, even if an earlier box closed:
  the model never finished stating its final answer.
- An empty box (``\\boxed{}``, the template's own example with nothing inside) is *not boxed*.
- Surrounding whitespace, ``$...$``, ``\\(...\\)`` and ``\\[...\\]`` inside the box are stripped.

Example::

    >>> extract_boxed(r"so the answer is $\\boxed{\\frac{1}{2}}$.")
    '\\\\frac{1}{2}'
    >>> extract_boxed(r"\\boxed{1} then \\boxed{2") is None
    True
"""

from __future__ import annotations

import re

_MARKERS = ("\\boxed", "\\fbox")


def _last_marker(text: str) -> tuple[int, int]:
    """Return ``(start, end)`` of the last box marker that is a whole command, or ``(-1, -1)``."""
    best = (-1, -1)
    for marker in _MARKERS:
        hi = len(text)
        while True:
            pos = text.rfind(marker, 0, hi)
            if pos < 0:
                break
            end = pos + len(marker)
            # "\boxedx" is another command name, not a box: the marker must end the command name.
            if end < len(text) and text[end].isalpha():
                hi = pos
                continue
            if pos > best[0]:
                best = (pos, end)
            break
    return best


def _match_group(text: str, open_pos: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``open_pos``, or -1 if unterminated.

    Backslash escapes (``\\{``, ``\\}``, ``\\\\``) are skipped, so they never change the depth.
    """
    depth = 0
    i = open_pos
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def strip_math_wrappers(answer: str) -> str:
    """Strip whitespace and one or more layers of ``$..$``, ``\\(..\\)``, ``\\[..\\]``."""
    s = answer.strip()
    changed = True
    while changed and s:
        changed = False
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)].strip()
                changed = True
                break
    return s


def extract_boxed(text: str) -> str | None:
    """Return the content of the last box in ``text``, or ``None`` when it has no usable box.

    Args:
        text: a model response (any size; the scan is linear).

    Returns:
        The stripped box content, or ``None`` for: no box, an unterminated last box, or an
        empty box.
    """
    start, end = _last_marker(text)
    if start < 0:
        return None
    i = end
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i >= n:
        return None
    if text[i] == "{":
        close = _match_group(text, i)
        if close < 0:
            return None
        content = text[i + 1 : close]
    elif i > end and text[i] not in "}])$\\":
        # "\boxed 5": LaTeX boxes the next token; models mean the next word (up to "$").
        j = i
        while j < n and not text[j].isspace() and text[j] != "$":
            j += 1
        content = text[i:j].rstrip(".,;")
    else:
        return None
    content = strip_math_wrappers(content)
    return content or None


_CONNECTOR_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[^\W\d_]+")
MAX_CONNECTOR_WORDS = 4
"""Boxes separated by at most this many words (and no blank line) state one answer together."""


def _is_connector(gap: str) -> bool:
    """Whether the text between two boxes only joins them (", ", "and", ``\\quad \\text{or}``,
    "papers and"): at most ``MAX_CONNECTOR_WORDS`` words outside LaTeX commands, no blank line,
    under 80 characters."""
    if "\n\n" in gap or len(gap) > 80:
        return False
    return len(_WORD.findall(_CONNECTOR_COMMAND.sub(" ", gap))) <= MAX_CONNECTOR_WORDS


def text_after_last_box(text: str) -> str | None:
    """The text after the last complete box of ``text`` (None when it has no complete box)."""
    start, end = _last_marker(text)
    if start < 0:
        return None
    i = end
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    close = _match_group(text, i)
    return None if close < 0 else text[close + 1 :]


def extract_last_boxes(text: str, limit: int = 64) -> list[str]:
    """Contents of the last run of boxes in ``text``, in order, repeats dropped.

    A run is boxes separated only by connectors (``\\boxed{1}, \\boxed{2}``, ``\\boxed{(2, 2)}
    \\quad \\text{and} \\quad \\boxed{(6, 2)}``; see :func:`_is_connector`). A box after a sentence of prose starts a new run, so
    an intermediate result boxed earlier never joins the final answer. At most ``limit`` boxes
    are read; linear in the length of ``text``.
    """
    runs: list[list[str]] = []
    i = 0
    n = len(text)
    last_end = -1
    count = 0
    while count < limit:
        pos, mlen = -1, 0
        for marker in _MARKERS:
            j = text.find(marker, i)
            while j >= 0 and j + len(marker) < n and text[j + len(marker)].isalpha():
                j = text.find(marker, j + 1)
            if j >= 0 and (pos < 0 or j < pos):
                pos, mlen = j, len(marker)
        if pos < 0:
            break
        k = pos + mlen
        while k < n and text[k] in " \t":
            k += 1
        if k >= n or text[k] != "{":
            i = k
            continue
        close = _match_group(text, k)
        if close < 0:
            break
        count += 1
        content = strip_math_wrappers(text[k + 1 : close])
        if content:
            if not runs or last_end < 0 or not _is_connector(text[last_end:pos]):
                runs.append([])
            if content not in runs[-1]:
                runs[-1].append(content)
            last_end = close + 1
        i = close + 1
    return runs[-1] if runs else []


_ANSWER_ANCHOR = r"(?:final\s+answer|answer)\s*(?:is|:|=|：)\s*[:：]?\s*"
_ANSWER_IS_MATH = re.compile(_ANSWER_ANCHOR + r"(\$[^$\n]{1,200}\$|\\\([^\n]{1,200}?\\\))", re.I)
_ANSWER_IS = re.compile(_ANSWER_ANCHOR + r"([^\n]{1,200}?)\s*(?:\.\s|\.$|$|\n)", re.I)
_GSM8K = re.compile(r"####\s*([^\n]{1,100})")
_LAST_NUMBER = re.compile(r"-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?:\s*/\s*[0-9]+)?")

FREE_TEXT_TAIL = 4000
"""Free-text extraction reads only the last this many characters of a response."""


def extract_free_text(text: str) -> str | None:
    """The final answer of an unboxed, free-text response, or None.

    Only for benchmarks whose schema asks for free-text answers (``extract="free_text"``); the
    paper's reward reads boxes only. In order, on the last ``FREE_TEXT_TAIL`` characters:

    1. the last ``#### x`` (GSM8K's answer line);
    2. the last "the answer is x" / "Answer: x" / "final answer: x" (up to the end of the line
       or sentence; ``$...$`` kept whole);
    3. the last number (integer, decimal, thousands separators, ``a/b``).

    >>> extract_free_text("3 + 4 = 7 apples, so the answer is 7.")
    '7'
    >>> extract_free_text("We get 12 and then 3/4")
    '3/4'
    """
    tail = text[-FREE_TEXT_TAIL:]
    for pattern in (_GSM8K, _ANSWER_IS_MATH, _ANSWER_IS):
        hits = list(pattern.finditer(tail))
        if hits:
            answer = strip_math_wrappers(hits[-1].group(1).strip().rstrip(".").strip())
            if answer:
                return answer
    numbers = list(_LAST_NUMBER.finditer(tail))
    if numbers:
        return numbers[-1].group(0).replace(" ", "")
    return None
