"""Benchmark registry and loaders on synthetic fixtures of each public schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_rence.data.benchmarks import (
    BENCHMARKS,
    CONSPO_BENCHMARKS,
    RENCE_BENCHMARKS,
    get_benchmark,
    load_benchmark,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "benchmarks"

EXPECTED = {
    "math500": ("math500.jsonl", ["10", r"\frac{3}{2}", r"\left( 3, \frac{\pi}{2} \right)"], {}),
    "aime24": ("aime24.jsonl", ["24", "10"], {}),
    "aime25": ("aime25.jsonl", ["42", "81"], {}),
    "aime26": ("aime26.jsonl", ["99", "120"], {}),
    "hmmt25": ("hmmt25.jsonl", ["12", r"\frac{1}{2}"], {}),
    "amc": ("amc.jsonl", ["42", "0.5"], {}),
    "minerva": ("minerva.jsonl", ["20", "3"], {"no_answer": 1}),
    "olympiadbench": ("olympiadbench.json", ["2, -2", "1"], {"has_image": 1, "no_answer": 1}),
}


def test_registry_covers_both_papers():
    assert set(RENCE_BENCHMARKS) | set(CONSPO_BENCHMARKS) == set(BENCHMARKS) == set(EXPECTED)
    assert all(BENCHMARKS[b].default_k == 4 for b in RENCE_BENCHMARKS)
    assert {b for b in BENCHMARKS if BENCHMARKS[b].conspo_k == 32} == {
        "aime24",
        "aime25",
        "aime26",
        "hmmt25",
        "amc",
    }


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_benchmark_schema_loads_answers_and_reports_skips(name):
    file, answers, skipped = EXPECTED[name]
    result = load_benchmark(name, FIXTURES / file)
    assert [r.answer for r in result.records] == answers
    assert dict(result.report.skipped) == skipped
    assert all(r.source == name and r.problem for r in result.records)
    assert len({r.id for r in result.records}) == len(result.records)


def test_aime24_alternative_capitalised_schema():
    result = load_benchmark("aime24", FIXTURES / "aime24_maxwell.json")
    assert [(r.id, r.answer) for r in result.records] == [("2024-I-1", "30")]
    assert dict(result.report.skipped) == {"no_answer": 1}


def test_math500_keeps_ids_and_metadata():
    rec = load_benchmark("math500", FIXTURES / "math500.jsonl").records[0]
    assert rec.id == "test/counting_and_probability/1.json"
    assert rec.metadata["subject"] == "Counting & Probability" and rec.metadata["level"] == 2


def test_unknown_benchmark_lists_the_registered_names():
    with pytest.raises(ValueError, match="olympiadbench"):
        get_benchmark("gsm8k")
