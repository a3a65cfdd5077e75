"""Evaluation benchmarks from local files, by name, in their public schemas.

=============  ===========================================  ============================================
name           public source (schema)                       fields read
=============  ===========================================  ============================================
math500        HuggingFaceH4/MATH-500                       problem, answer (or boxed solution), unique_id
aime24         HuggingFaceH4/aime_2024, Maxwell-Jia/AIME_2024 id/ID, problem/Problem, answer/Answer
aime25         math-ai/aime25, opencompass/AIME2025          id, problem/question, answer
aime26         MathArena/aime_2026                          problem_idx, problem, answer
hmmt25         MathArena/hmmt_feb_2025                      problem_idx, problem, answer
amc            AI-MO/aimo-validation-amc, math-ai/amc23     id, problem/question, answer (float -> int)
minerva        Minerva Math (math-ai/minervamath, Qwen eval) problem/question, answer or boxed solution
olympiadbench  Hothan/OlympiadBench (OE_TO_maths_en_COMP)    id, question, final_answer (list), unit
=============  ===========================================  ============================================

ReNCE (Table 1) reports pass@1 as avg@4 on the first six; ConSPO (Appendix B.1) reports avg@32 on
AIME, HMMT and AMC. ``default_k`` holds the ReNCE value, ``conspo_k`` ConSPO's.

Example::

    result = load_benchmark("aime24", "data/aime_2024.parquet")
    result.records[0].answer      # '204'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_rence.data.loaders import (
    Row,
    SkipRow,
    answer_text,
    boxed_answer_of,
    first_field,
    load_rows,
    require_text,
)
from nemo_rence.data.records import LoadResult

PROBLEM_FIELDS = ("problem", "Problem", "question", "Question")
ANSWER_FIELDS = ("answer", "Answer", "final_answer", "expected_answer", "ground_truth")
ID_FIELDS = ("unique_id", "id", "ID", "problem_idx", "idx")
META_FIELDS = ("subject", "level", "url", "year", "type", "problem_type", "subfield", "unit")


def common_row(row: Row, n: int) -> tuple[str, str, str, dict[str, Any]]:
    """Problem / answer / id by the usual aliases; answer falls back to the boxed solution."""
    problem = require_text(first_field(row, PROBLEM_FIELDS), "no_problem")
    answer = answer_text(first_field(row, ANSWER_FIELDS))
    if not answer:
        answer = boxed_answer_of(first_field(row, ("solution", "Solution")))
    if not answer:
        raise SkipRow("no_answer")
    rid = first_field(row, ID_FIELDS)
    meta = {k: row[k] for k in META_FIELDS if k in row and row[k] is not None}
    return (str(rid) if rid is not None else str(n)), problem, answer, meta


def _olympiad_row(row: Row, n: int) -> tuple[str, str, str, dict[str, Any]]:
    """OlympiadBench: text-only rows; ``final_answer`` is a list of ``$...$`` strings."""
    images = [k for k in row if k.startswith("image") and row[k] not in (None, "")]
    if images:
        raise SkipRow("has_image")
    question = require_text(first_field(row, ("question", "problem")), "no_problem")
    context = row.get("context")
    if isinstance(context, str) and context.strip():
        question = context.strip() + "\n" + question
    answer = answer_text(row.get("final_answer"))
    if not answer:
        answer = answer_text(row.get("answer"))
    if not answer:
        raise SkipRow("no_answer")
    rid = first_field(row, ("id", "idx"))
    meta = {
        k: row[k]
        for k in ("unit", "answer_type", "is_multiple_answer", "subfield")
        if row.get(k) is not None
    }
    return (str(rid) if rid is not None else str(n)), question, answer, meta


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark of the registry.

    Attributes:
        name: registry key.
        title: the column title of the papers' tables.
        parser: row parser for its public schema.
        default_k: samples per problem for pass@1 (avg@k) as ReNCE reports it (4).
        conspo_k: samples per problem as ConSPO reports it (32 on AIME/HMMT/AMC, else 1).
        description: where the public data comes from.
    """

    name: str
    title: str
    parser: Callable[[Row, int], tuple[str, str, str, dict[str, Any]]]
    default_k: int = 4
    conspo_k: int = 1
    description: str = ""


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("math500", "MATH-500", common_row, 4, 1, "HuggingFaceH4/MATH-500"),
        BenchmarkSpec("aime24", "AIME24", common_row, 4, 32, "HuggingFaceH4/aime_2024"),
        BenchmarkSpec("aime25", "AIME25", common_row, 4, 32, "math-ai/aime25"),
        BenchmarkSpec("aime26", "AIME26", common_row, 4, 32, "MathArena/aime_2026"),
        BenchmarkSpec("hmmt25", "HMMT25", common_row, 4, 32, "MathArena/hmmt_feb_2025"),
        BenchmarkSpec("amc", "AMC", common_row, 4, 32, "AI-MO/aimo-validation-amc"),
        BenchmarkSpec("minerva", "Minerva", common_row, 4, 1, "Minerva Math (272 problems)"),
        BenchmarkSpec(
            "olympiadbench", "Olympiad", _olympiad_row, 4, 1, "Hothan/OlympiadBench (OE maths en)"
        ),
    )
}
"""Benchmark name -> spec. ``RENCE_BENCHMARKS`` / ``CONSPO_BENCHMARKS`` list the papers' sets."""

RENCE_BENCHMARKS = ("olympiadbench", "minerva", "aime25", "aime24", "math500", "amc")
"""Table 1 of the ReNCE paper, in its column order."""

CONSPO_BENCHMARKS = ("aime24", "aime25", "aime26", "hmmt25", "math500", "amc", "olympiadbench")
"""Table 3 of the ConSPO paper, in its column order."""


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec of ``name``; the error lists the registered names."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(
            f"unknown benchmark {name!r}; registered: {', '.join(sorted(BENCHMARKS))}"
        ) from None


def load_benchmark(name: str, path: str | Path) -> LoadResult:
    """Load benchmark ``name`` from a local .jsonl / .json / .parquet file in its public schema.

    Duplicates are kept (a benchmark is what it is); rows without a problem or answer are
    skipped and reported.
    """
    spec = get_benchmark(name)
    return load_rows(path, spec.parser, spec.name, dedup=False)
