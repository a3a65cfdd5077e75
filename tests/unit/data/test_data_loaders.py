"""Prompt-dataset loaders on the schema fixtures in tests/fixtures/data (malformed rows included)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nemo_rence.data.loaders import FieldMap, answer_text, load_prompts, read_rows

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def _to_parquet(jsonl: Path, out: Path) -> Path:
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out


def test_dapo_parquet_strips_instructions_dedups_and_counts_bad_rows(tmp_path):
    path = _to_parquet(FIXTURES / "dapo_math_17k.jsonl", tmp_path / "dapo.parquet")
    result = load_prompts(path, "dapo")
    problems = [r.problem for r in result.records]
    assert problems[0] == "A box holds 3 red and 4 blue marbles. How many marbles are in the box?"
    assert all("Answer:" not in p and "Solve the following" not in p for p in problems)
    assert [r.answer for r in result.records] == ["7", "12", "11"]
    assert [r.id for r in result.records] == ["dapo-0", "dapo-1", "dapo-4"]
    assert result.report.rows == 6 and result.report.kept == 3
    assert dict(result.report.skipped) == {"duplicate": 1, "no_answer": 1, "no_problem": 1}
    assert "no_answer=1" in result.report.summary()
    assert result.records[0].metadata["data_source"] == "math_dapo"


def test_dapo_jsonl_gives_the_same_records_as_parquet(tmp_path):
    parquet = load_prompts(
        _to_parquet(FIXTURES / "dapo_math_17k.jsonl", tmp_path / "d.parquet"), "dapo"
    )
    jsonl = load_prompts(FIXTURES / "dapo_math_17k.jsonl", "dapo")
    assert parquet.records == jsonl.records


def test_math_answer_from_field_or_last_box_and_malformed_lines_counted():
    result = load_prompts(FIXTURES / "math.jsonl", "math")
    assert [r.answer for r in result.records] == ["2", r"\frac{2}{3}", "(-1,1)"]
    assert result.records[0].metadata == {"level": "Level 1", "type": "Prealgebra"}
    assert dict(result.report.skipped) == {"no_answer": 1, "no_problem": 1, "malformed": 2}
    assert result.report.rows == 7


def test_deepscaler_json_uses_answer_then_boxed_solution():
    result = load_prompts(FIXTURES / "deepscaler.json", "deepscaler")
    assert [r.answer for r in result.records] == ["6", "15", "7"]
    assert dict(result.report.skipped) == {"no_answer": 1}


def test_generic_jsonl_with_custom_fields():
    fields = FieldMap(problem="question", answer="target", id="uid")
    result = load_prompts(FIXTURES / "generic.jsonl", fields=fields, source="mine")
    assert [(r.id, r.answer, r.source) for r in result.records] == [
        ("g1", "5", "mine"),
        ("g2", "6", "mine"),
    ]
    assert dict(result.report.skipped) == {"no_answer": 2}  # missing and NaN


def test_duplicates_are_kept_when_dedup_is_off(tmp_path):
    result = load_prompts(FIXTURES / "dapo_math_17k.jsonl", "dapo", dedup=False)
    assert result.report.kept == 4
    assert len({r.id for r in result.records}) == 4  # ids stay unique


def test_unknown_schema_and_file_type_errors_are_explicit(tmp_path):
    with pytest.raises(ValueError, match="deepscaler"):
        load_prompts(FIXTURES / "math.jsonl", "gsm8k")
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"\.parquet"):
        list(read_rows(bad))
    with pytest.raises(FileNotFoundError):
        list(read_rows(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (142.0, "142"),
        (0.5, "0.5"),
        (7, "7"),
        (None, ""),
        (float("nan"), ""),
        ("  $\\frac{1}{2}$ ", "\\frac{1}{2}"),
        (["$2$", "$-2$"], "2, -2"),
        ([], ""),
        ("nan", ""),
    ],
)
def test_answer_text_normalises_stored_answer_types(value, text):
    assert answer_text(value) == text
