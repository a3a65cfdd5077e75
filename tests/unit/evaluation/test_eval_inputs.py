"""``nemo-rence eval`` inputs: benchmark names from files, bad rows counted, bad settings named."""

from __future__ import annotations

import json
import math

import pytest

from nemo_rence.evaluation.inputs import (
    EvalInputError,
    EvalSettings,
    load_benchmark_file,
    parse_benchmark_arg,
)


def _jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    "filename, name, schema, title",
    [
        ("MATH-500.jsonl", "math500", "math500", "MATH-500"),
        ("aime24.parquet", "aime24", "aime24", "AIME24"),
        ("minerva_math.json", "minerva", "minerva", "Minerva"),
        ("OlympiadBench_OE_TO_maths_en_COMP.jsonl", "olympiadbench", "olympiadbench", "Olympiad"),
        ("my_set.jsonl", "my_set", "generic", "my_set"),
    ],
)
def test_benchmark_name_and_schema_come_from_the_file_name(tmp_path, filename, name, schema, title):
    path = tmp_path / filename
    path.write_text("")
    bench = parse_benchmark_arg(str(path))
    assert (bench.name, bench.schema, bench.title) == (name, schema, title)


def test_name_equals_path_picks_the_schema(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("")
    assert parse_benchmark_arg(f"aime25={path}").schema == "aime25"
    custom = parse_benchmark_arg(f"mine={path}")
    assert (custom.name, custom.schema, custom.title) == ("mine", "generic", "mine")


def test_missing_file_and_unknown_format_name_the_argument_and_allowed_formats(tmp_path):
    with pytest.raises(EvalInputError, match=r"--benchmarks .*no such file"):
        parse_benchmark_arg(str(tmp_path / "nope.jsonl"))
    (tmp_path / "b.csv").write_text("problem,answer\n")
    with pytest.raises(EvalInputError, match=r"--benchmarks .*'.csv'.*\.jsonl, \.json, \.parquet"):
        parse_benchmark_arg(str(tmp_path / "b.csv"))


def test_bad_rows_are_counted_by_reason_not_fatal(tmp_path):
    path = _jsonl(
        tmp_path / "math500.jsonl",
        [
            {"unique_id": "a", "problem": "1+1", "answer": "2"},
            "{not json",
            {"unique_id": "b", "problem": "no answer here"},
            {"unique_id": "c", "answer": "3"},
            {"unique_id": "d", "problem": "boxed", "solution": "so \\boxed{4}"},
        ],
    )
    loaded = load_benchmark_file(parse_benchmark_arg(path))
    assert [r.id for r in loaded.records] == ["a", "d"]
    assert loaded.records[1].answer == "4"
    assert dict(loaded.report.skipped) == {"malformed": 1, "no_answer": 1, "no_problem": 1}


def test_a_file_without_any_usable_row_is_an_input_error(tmp_path):
    path = _jsonl(tmp_path / "x.jsonl", [{"problem": "p"}])
    with pytest.raises(EvalInputError, match=r"--benchmarks x: no usable row"):
        load_benchmark_file(parse_benchmark_arg(path))
    broken = tmp_path / "y.json"
    broken.write_text("{")
    with pytest.raises(EvalInputError, match=r"--benchmarks y: cannot read"):
        load_benchmark_file(parse_benchmark_arg(str(broken)))


def test_defaults_are_the_papers_avg_at_4_at_temperature_0_7():
    s = EvalSettings()
    assert (s.k, s.temperature, s.top_p) == (4, 0.7, 1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, r"--k must be an integer >= 1, got 0"),
        ({"temperature": -0.1}, r"--temperature must be a finite number >= 0"),
        ({"temperature": math.nan}, r"--temperature must be a finite number >= 0"),
        ({"top_p": 0.0}, r"--top-p must be in \(0, 1\]"),
        ({"max_new_tokens": 0}, r"--max-new-tokens must be an integer >= 1"),
        ({"batch_size": 0}, r"--batch-size must be an integer >= 1"),
        ({"engine": "onnx"}, r"--engine must be one of \['hf', 'vllm', 'trtllm'\]"),
        ({"template": "fancy"}, r"--template: template must be one of"),
    ],
)
def test_bad_settings_name_the_flag_and_allowed_values(kwargs, message):
    with pytest.raises(EvalInputError, match=message):
        EvalSettings(**kwargs)
