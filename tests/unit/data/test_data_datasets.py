"""load_datasets: the conf/data groups on the schema fixtures, mixtures, deduplication, the
held-out split, and the rows that must not be altered or dropped without a word (issue 20.6)."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nemo_rence.config import ConfigError, compose
from nemo_rence.data.config import DATA_ROOT_ENV, DataConfig
from nemo_rence.data.datasets import EmptyDatasetError, load_datasets, normalize_problem
from nemo_rence.data.loaders import SCHEMAS, read_rows
from nemo_rence.data.synthetic import ArithmeticConfig, generate_arithmetic

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"
DAPO = str(FIXTURES / "dapo_math_17k.jsonl")
MATH = str(FIXTURES / "math.jsonl")
DEEPSCALER = str(FIXTURES / "deepscaler.json")
GENERIC = str(FIXTURES / "generic.jsonl")


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _problems(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}
            for i in range(start, start + n)]  # fmt: skip


def _hash_heldout(problem: str, fraction: float) -> bool:
    """Independent statement of the split: blake2b-64 of the normalised text, per million."""
    key = " ".join(problem.casefold().split())
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return h % 1_000_000 < fraction * 1_000_000


# ------------------------------------------------------------------------ schemas and groups


def test_config_schemas_are_the_loaders_schemas():
    from nemo_rence.data.config import SCHEMAS as CONFIG_SCHEMAS

    assert set(CONFIG_SCHEMAS) == set(SCHEMAS)


@pytest.mark.parametrize(
    ("group", "path", "answers"),
    [
        ("dapo17k", DAPO, {"7", "12", "11"}),
        ("math", MATH, {"2", r"\frac{2}{3}", "(-1,1)"}),
        ("deepscaler", DEEPSCALER, {"6", "15", "7"}),
    ],
)
def test_each_public_schema_group_composes_and_loads_its_fixture(group, path, answers):
    cfg = compose([f"data={group}", f"data.path={path}", "data.heldout_fraction=0"])
    train, heldout, report = load_datasets(cfg.data)
    assert {r.answer for r in train} == answers and heldout == []
    assert report.train_prompts == 3 and report.heldout == "none"
    assert all("Answer:" not in r.problem for r in train)  # DAPO's instructions stripped


def test_jsonl_group_reads_the_field_map():
    cfg = compose(["data=jsonl", f"data.path={GENERIC}", "data.problem_field=question",
                   "data.answer_field=target", "data.id_field=uid", "data.heldout_fraction=0"])  # fmt: skip
    train, _, report = load_datasets(cfg.data)
    assert [(r.id, r.problem, r.answer) for r in train] == [
        ("g1", "What is 2+3?", "5"),
        ("g2", "What is 10-4?", "6"),
    ]
    assert dict(report.skipped) == {"no_answer": 2}


def test_presets_read_their_files_from_the_data_root_env_var(tmp_path, monkeypatch):
    rows = [json.loads(x) for x in Path(DAPO).read_text().splitlines() if x.strip()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "dapo-math-17k.parquet")
    math_rows = [json.loads(x) for x in Path(MATH).read_text().splitlines()[:4]]
    pq.write_table(pa.Table.from_pylist(math_rows), tmp_path / "math-train.parquet")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    cfg = compose(["data=mixture", "data.heldout_fraction=0"])
    assert [s.path for s in cfg.data.sources] == [
        f"{tmp_path}/dapo-math-17k.parquet",
        f"{tmp_path}/math-train.parquet",
    ]
    train, _, report = load_datasets(cfg.data)
    assert report.train == {"dapo": 3, "math": 3}  # the paper's DAPO + MATH, weight 1 each
    assert [r.id for r in train][:2] == ["dapo/dapo-0", "dapo/dapo-1"]


def test_missing_file_is_a_config_error_naming_the_field_and_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    cfg = compose(["data=dapo17k"])
    with pytest.raises(ConfigError, match=rf"data\.path: .*not found: {tmp_path}/dapo-math"):
        load_datasets(cfg.data)
    mixture = compose(["data=mixture", f"data.sources=[{{path: {DAPO}, schema: dapo}}, "
                       f"{{path: {tmp_path}/nope.jsonl, schema: math}}]"])  # fmt: skip
    with pytest.raises(ConfigError, match=rf"data\.sources\[1\]\.path: .*{tmp_path}/nope\.jsonl"):
        mixture.data.check_files()
    with pytest.raises(ConfigError, match=r"data\.heldout_path: .*held\.jsonl"):
        DataConfig(
            task="jsonl", path=GENERIC, heldout_path=str(tmp_path / "held.jsonl")
        ).check_files()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "gsm8k"}, r"data\.task must be one of \['arithmetic', 'dapo'"),
        ({"task": "dapo"}, r"data\.path is required when data\.task='dapo'"),
        ({"task": "jsonl", "path": "x.csv"}, r"data\.path must be a \.jsonl"),
        ({"task": "mixture"}, r"data\.sources is required"),
        ({"task": "mixture", "sources": [{"path": "a.jsonl", "schema": "gsm"}]},
         r"data\.sources\[0\]\.schema must be one of \['dapo'"),
        ({"task": "mixture", "sources": [{"path": "a.jsonl", "weight": -1}]},
         r"data\.sources\[0\]\.weight must be a finite number >= 0"),
        ({"task": "mixture", "sources": [{"path": "a.jsonl", "weight": float("nan")}]},
         r"weight must be a finite number"),
        ({"task": "mixture", "sources": [{"path": "a.jsonl", "weight": 0}]}, r"weight > 0"),
        ({"task": "mixture", "sources": [{"path": "a.jsonl", "file": "b"}]},
         r"unknown key\(s\) \['file'\] in data\.sources\[0\]"),
        ({"task": "jsonl", "path": "a.jsonl", "sources": [{"path": "b.jsonl"}]},
         r"data\.sources applies to data\.task='mixture' only"),
        ({"task": "jsonl", "path": "a.jsonl", "heldout_fraction": 1.0},
         r"data\.heldout_fraction must be in \[0, 1\)"),
        ({"task": "jsonl", "path": "a.jsonl", "heldout_path": "h.jsonl", "heldout_fraction": 0.1},
         r"set data\.heldout_path or data\.heldout_fraction, not both"),
        ({"task": "jsonl", "path": "a.jsonl", "max_row_bytes": 0}, r"data\.max_row_bytes must be > 0"),
    ],
)  # fmt: skip
def test_bad_data_values_name_the_field_and_the_allowed_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**kwargs)


def test_bad_source_fails_at_compose_time_not_at_load_time():
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.schema"):
        compose(["data=mixture", "data.sources=[{path: /x/a.jsonl, schema: csv}]"])


def test_arithmetic_default_is_the_generator_unchanged():
    cfg = compose([])
    train, heldout, report = load_datasets(cfg.data)
    d = cfg.data
    arith = ArithmeticConfig(digits=d.digits, steps=d.steps, operations=d.operations, seed=d.seed)
    assert train == generate_arithmetic(d.train_size, arith, split="train")
    assert heldout == generate_arithmetic(d.heldout_size, arith, split="heldout")
    assert [r.metadata for r in train[:3]] == [r.metadata for r in
                                              generate_arithmetic(3, arith, split="train")]  # fmt: skip
    assert (report.train_prompts, report.heldout_prompts) == (len(train), len(heldout))
    assert report.heldout == "synthetic"


# ------------------------------------------------------------------ mixture, dedup, held-out


def test_mixture_weights_copy_or_subsample_each_source(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", _problems(50))
    b = _jsonl(tmp_path / "b.jsonl", _problems(400, start=100))
    cfg = DataConfig(task="mixture", heldout_fraction=0.0, sources=[
        {"path": a, "weight": 2, "name": "a"}, {"path": b, "weight": 0.25, "name": "b"}])  # fmt: skip
    train, _, report = load_datasets(cfg)
    a_ids = [r.id for r in train if r.source == "a"]
    b_ids = [r.id for r in train if r.source == "b"]
    assert sorted(a_ids) == sorted([f"a/p{i}" for i in range(50)] * 2)  # every one twice
    assert len(set(b_ids)) == len(b_ids) and 60 <= len(b_ids) <= 140  # ~0.25 x 400, no copies
    again, _, _ = load_datasets(cfg)
    assert [r.id for r in again] == [r.id for r in train]  # deterministic
    assert report.train == {"a": 50, "b": 400} and report.train_prompts == len(train)
    assert "weights a=2 (50 problems), b=0.25 (400 problems)" in report.summary()


def test_duplicates_by_normalised_text_across_sources_are_counted(tmp_path):
    a = _jsonl(
        tmp_path / "a.jsonl",
        [{"problem": "What is  2+3?", "answer": "5"}, {"problem": "Find x.", "answer": "1"}],
    )
    b = _jsonl(tmp_path / "b.jsonl", [
        {"problem": "what is 2+3?\n", "answer": " 5"}, {"problem": "FIND X.", "answer": "2"},
        {"problem": "New one.", "answer": "3"}])  # fmt: skip
    cfg = DataConfig(task="mixture", heldout_fraction=0.0, sources=[{"path": a}, {"path": b}])
    train, _, report = load_datasets(cfg)
    assert [r.problem for r in train] == ["What is  2+3?", "Find x.", "New one."]
    assert [r.id for r in train] == ["generic/0", "generic/1", "generic-2/2"]
    assert dict(report.sources[1].skipped) == {"duplicate": 1, "duplicate_other_answer": 1}
    assert report.metrics()["data/skipped/duplicate"] == 1.0
    undeduped, _, _ = load_datasets(
        DataConfig(task="mixture", heldout_fraction=0.0, dedup=False,
                   sources=[{"path": a}, {"path": b}]))  # fmt: skip
    assert len(undeduped) == 5


def test_normalize_problem_folds_case_width_and_whitespace():
    assert normalize_problem("Find  $x$.\n") == normalize_problem("find $x$.")
    assert normalize_problem("ＡＢ") == "ab"  # NFKC: full-width letters


def test_hash_heldout_split_is_disjoint_stable_and_the_stated_fraction(tmp_path):
    rows = _problems(1000)
    path = _jsonl(tmp_path / "p.jsonl", rows)
    cfg = DataConfig(task="jsonl", path=path, heldout_fraction=0.2, heldout_size=1000)
    train, heldout, report = load_datasets(cfg)
    train_keys = {normalize_problem(r.problem) for r in train}
    held_keys = {normalize_problem(r.problem) for r in heldout}
    assert not train_keys & held_keys
    assert len(train_keys | held_keys) == 1000
    assert {r.problem for r in heldout} == {
        r["problem"] for r in rows if _hash_heldout(r["problem"], 0.2)
    }  # independent computation of the split
    assert 150 <= len(heldout) <= 250 and report.heldout == "hash 0.2"
    # the same split whatever the file order, the seed and the other problems
    shuffled = _jsonl(tmp_path / "q.jsonl", rows[::-1][:500])
    _, heldout2, _ = load_datasets(
        DataConfig(task="jsonl", path=shuffled, heldout_fraction=0.2, heldout_size=1000, seed=7)
    )
    assert {r.problem for r in heldout2} == {r.problem for r in heldout} & {
        r["problem"] for r in rows[500:]
    }


def test_heldout_size_caps_the_split_and_the_default_fraction_is_five_percent(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", _problems(1000))
    train, heldout, report = load_datasets(DataConfig(task="jsonl", path=path, heldout_size=10))
    assert len(heldout) == 10 and report.heldout == "hash 0.05"
    assert 930 <= len(train) <= 970  # the whole 5% is out of training, not only the 10 kept


def test_heldout_file_removes_its_problems_from_training(tmp_path):
    train_file = _jsonl(tmp_path / "t.jsonl", _problems(20))
    held = _jsonl(tmp_path / "h.jsonl", [
        {"problem": "WHAT IS 3 + 3?", "answer": "6"}, {"problem": "Other?", "answer": "1"}])  # fmt: skip
    cfg = DataConfig(task="jsonl", path=train_file, heldout_path=held)
    train, heldout, report = load_datasets(cfg)
    assert [r.problem for r in heldout] == ["WHAT IS 3 + 3?", "Other?"]
    assert len(train) == 19 and "What is 3 + 3?" not in {r.problem for r in train}
    assert report.sources[0].skipped == {"in_heldout": 1} and report.heldout == "file"


# ------------------------------------------------ rows altered or dropped without a word (20.6)


def test_invalid_utf8_rows_are_skipped_with_a_reason_never_replaced(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"problem": "Good one?", "answer": "1"}\n'
        b'{"problem": "Caf\xe9 bill?", "answer": "2"}\n'  # latin-1 byte, not UTF-8
        b'{"problem": "Caf\xc3\xa9 ok?", "answer": "3"}\n'
    )
    train, _, report = load_datasets(DataConfig(task="jsonl", path=str(path), heldout_fraction=0))
    assert [r.problem for r in train] == ["Good one?", "Café ok?"]
    assert not any("\ufffd" in r.problem for r in train)
    assert dict(report.skipped) == {"invalid_utf8": 1}
    assert "invalid_utf8=1 (e.g. row 1)" in report.summary()


def test_invalid_utf8_in_a_json_list_skips_only_that_row(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'[{"problem": "A?", "answer": "1"}, {"problem": "B\xff?", "answer": "2"}]')
    rows = list(read_rows(path))
    assert rows[0] == (0, {"problem": "A?", "answer": "1"})
    assert rows[1][1].reason == "invalid_utf8"


def test_over_long_row_is_skipped_while_reading_in_bounded_memory(tmp_path):
    path = tmp_path / "long.jsonl"
    with path.open("wb") as f:
        f.write(b'{"problem": "Short?", "answer": "1"}\n')
        f.write(b'{"problem": "' + b"x" * (20 << 20) + b'", "answer": "2"}\n')  # 20 MiB line
        f.write(b'{"problem": "After?", "answer": "3"}\n')
    cfg = DataConfig(task="jsonl", path=str(path), heldout_fraction=0, max_row_bytes=1 << 16)
    tracemalloc.start()
    try:
        train, _, report = load_datasets(cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.problem for r in train] == ["Short?", "After?"]
    assert dict(report.skipped) == {"too_long": 1} and report.rows == 3
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB while skipping a 20 MiB line"


def test_row_of_exactly_max_bytes_is_kept_and_one_more_is_not(tmp_path):
    row = json.dumps({"problem": "P?", "answer": "1"}).encode()
    path = tmp_path / "edge.jsonl"
    path.write_bytes(row + b"\n" + row[:-1] + b' , "x": 1}\n' + row)  # no final newline
    got = [r for _, r in read_rows(path, max_row_bytes=len(row))]
    assert isinstance(got[0], dict) and isinstance(got[2], dict)
    assert got[1].reason == "too_long"


def test_empty_or_all_invalid_dataset_says_no_usable_row_with_the_counts(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(EmptyDatasetError, match=r"no usable row was found .*0 row\(s\) read"):
        load_datasets(DataConfig(task="jsonl", path=str(empty)))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"problem": "\xff", "answer": "1"}\nnot json\n{"problem": "no answer"}\n')
    with pytest.raises(EmptyDatasetError) as err:
        load_datasets(DataConfig(task="jsonl", path=str(bad)))
    text = str(err.value)
    assert "no usable row was found" in text and "max_prompt_tokens" not in text
    assert "3 row(s) read, skipped: invalid_utf8=1, malformed=1, no_answer=1" in text
    assert f"data.path={bad}" in text


def test_parquet_rows_are_read_in_batches_in_order(tmp_path):
    rows = _problems(10_000)
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3_000)
    got = list(read_rows(path))
    assert [n for n, _ in got] == list(range(10_000))
    assert [r for _, r in got] == rows


# ------------------------------------------------------------------------------ build.py


def test_build_datasets_prints_the_report_for_files_and_nothing_for_arithmetic(capsys):
    from nemo_rence.build import _datasets

    cfg = compose(["data=mixture", "data.heldout_fraction=0", f"data.sources=[{{path: {DAPO}, "
                   f"schema: dapo}}, {{path: {MATH}, schema: math}}]"])  # fmt: skip
    train, heldout, metrics = _datasets(cfg)
    out = capsys.readouterr().out
    assert len(train) == 6 and heldout == []
    assert metrics["data/train_prompts"] == 6 and metrics["data/heldout_prompts"] == 0
    assert "data: dapo: kept 3 of 6 rows" in out and "data: math: kept 3 of 7 rows" in out
    assert "data: 6 training prompts, 0 held-out (none)" in out
    default = compose([])
    assert _datasets(default) == (*load_datasets(default.data)[:2], {})
    assert capsys.readouterr().out == ""  # the embedded default prints what it always did
