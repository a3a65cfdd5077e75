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
