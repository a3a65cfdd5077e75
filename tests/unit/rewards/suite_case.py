"""One case of a public grader test suite: ``Case(kind, gold, pred, expected, opts)``."""

from __future__ import annotations

from typing import Any, NamedTuple


class Case(NamedTuple):
    """A (gold, prediction, expected verdict) case quoted from a public test suite.

    Attributes:
        kind: what the case exercises ("number", "latex", "sequence", "letter", ...).
        gold: the gold text as the suite passes it (a bare answer, ``$...$`` or a solution).
        pred: the prediction as the suite passes it (a bare answer or a whole response).
        expected: the verdict the suite asserts.
        opts: the suite's settings for the case: ``match`` (extraction configs: "latex",
            "expr", "letters", "default"), ``precision``, ``strict``,
            ``allow_set_relation_comp``, ``language``.
    """

    kind: str
    gold: str
    pred: str
    expected: bool
    opts: dict[str, Any]
