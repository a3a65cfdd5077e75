"""Prompt datasets from local files in their public schemas (.jsonl, .json, .parquet).

Schemas (field names as published on the Hugging Face hub):

- ``dapo`` — BytedTsinghua-SIA/DAPO-Math-17k (parquet): ``prompt`` (list of chat messages whose
  user content wraps the problem in DAPO's "Answer:" instructions, removed here),
  ``reward_model.ground_truth``, ``data_source``, ``ability``, ``extra_info.index``. The
  published file repeats each problem many times: duplicates (same problem and answer) are
  skipped and counted.
- ``math`` — hendrycks MATH (jsonl): ``problem``, ``solution``, ``level``, ``type``; the answer
  is the ``answer`` field when present, else the last ``\\boxed{}`` of ``solution``.
- ``deepscaler`` — agentica-org/DeepScaleR-Preview-Dataset (json): ``problem``, ``answer``,
  ``solution``.
- ``generic`` — any jsonl/json/parquet with configurable field names.

Every loader returns a :class:`~nemo_rence.data.records.LoadResult`; rows without a usable
problem or answer are skipped, counted by reason and logged, never silently dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_rence.data.records import LoadReport, LoadResult, PromptRecord
from nemo_rence.rewards.extract import extract_boxed, strip_math_wrappers

SUFFIXES = (".jsonl", ".json", ".parquet")
_DOLLAR = re.compile(r"(?<!\\)\$")

DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be "
    "of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


class SkipRow(Exception):
    """Raised by a row parser: the row is skipped and counted under ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Row = dict[str, Any]
RowParser = Callable[[Row, int], tuple[str, str, str, dict[str, Any]]]
"""``(row, row_number) -> (id, problem, answer, metadata)``; raises :class:`SkipRow`."""


MAX_ROW_BYTES = 1 << 20
"""Default limit of one row's bytes (``data.max_row_bytes``): a DAPO row is ~0.5 KB."""


def read_rows(
    path: str | Path, max_row_bytes: int = MAX_ROW_BYTES
) -> Iterator[tuple[int, Row | SkipRow]]:
    """Yield ``(row_number, row)`` from a .jsonl, .json or .parquet file.

    A row that cannot be used is yielded as a :class:`SkipRow` naming the reason, for the
    caller to count: "malformed" (not JSON, or not a JSON object), "invalid_utf8" (bytes that
    are not UTF-8: never replaced by U+FFFD inside a kept row), "too_long" (more than
    ``max_row_bytes``). A .jsonl line is read in bounded memory: an over-long line is skipped
    in chunks without being decoded or parsed. A .json file (a list of rows, or an object with
    one list-valued key: "data", "rows", "problems", "train", "test") is parsed whole, then
    each row is checked. A .parquet file is read in batches of 4096 rows; its strings are
    UTF-8 by the format.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"unsupported file type {p.suffix!r} for {p}: use one of {SUFFIXES}")
    if not p.is_file():
        raise FileNotFoundError(f"dataset file not found: {p}")
    if suffix == ".jsonl":
        yield from _read_jsonl(p, max_row_bytes)
    elif suffix == ".json":
        yield from _read_json(p, max_row_bytes)
    else:
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(p).iter_batches(batch_size=4096):  # bounded memory
            for row in batch.to_pylist():
                yield n, row
                n += 1


def _read_jsonl(p: Path, max_row_bytes: int) -> Iterator[tuple[int, Row | SkipRow]]:
    with p.open("rb") as f:
        n = -1
        while True:
            raw = f.readline(max_row_bytes + 1)
            if not raw:
                return
            n += 1
            if len(raw) > max_row_bytes and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # drop the rest of the line, in chunks
                    raw = f.readline(1 << 16)
                yield n, SkipRow("too_long")
                continue
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield n, SkipRow("invalid_utf8")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                yield n, SkipRow("malformed")
                continue
            yield n, row if isinstance(row, dict) else SkipRow("malformed")


def _has_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a lone surrogate (undecodable bytes, escaped)."""
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _read_json(p: Path, max_row_bytes: int) -> Iterator[tuple[int, Row | SkipRow]]:
    # surrogateescape keeps the rows around an invalid byte readable; those rows are skipped
    data = json.loads(p.read_bytes().decode("utf-8", errors="surrogateescape"))
    if isinstance(data, dict):
        lists = [v for k, v in data.items() if isinstance(v, list)]
        keyed = [data[k] for k in ("data", "rows", "problems", "train", "test") if k in data]
        if keyed and isinstance(keyed[0], list):
            data = keyed[0]
        elif len(lists) == 1:
            data = lists[0]
        else:
            raise ValueError(f"{p}: a .json dataset must be a list of rows or hold one list")
    if not isinstance(data, list):
        raise ValueError(f"{p}: a .json dataset must be a list of rows")
    for n, row in enumerate(data):
        if not isinstance(row, dict):
            yield n, SkipRow("malformed")
        elif _has_surrogate(row):
            yield n, SkipRow("invalid_utf8")
        elif len(json.dumps(row, ensure_ascii=False).encode()) > max_row_bytes:
            yield n, SkipRow("too_long")
        else:
            yield n, row


def answer_text(value: Any) -> str:
    """A dataset's answer value as text, or "" when unusable (None, NaN, empty list ...).

    Integral floats lose ``.0`` (AMC answers are stored as floats); lists join with ", "
    (OlympiadBench stores ``final_answer`` as a list); ``$...$`` wrappers are stripped.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        parts = [answer_text(v) for v in value]
        return ", ".join(p for p in parts if p)
    if isinstance(value, str):
        # "$2$, $-2$" (OlympiadBench multi-answers): drop every math delimiter, keep "\$".
        text = _DOLLAR.sub("", strip_math_wrappers(value)).strip()
        return "" if text.lower() in ("", "nan", "none", "null") else text
    return ""


def first_field(row: Row, names: tuple[str, ...]) -> Any:
    """The value of the first of ``names`` present (and not None) in ``row``."""
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    return None


def require_text(value: Any, reason: str) -> str:
    """``value`` as stripped non-empty text, else :class:`SkipRow` (``reason``)."""
    if not isinstance(value, str) or not value.strip():
        raise SkipRow(reason)
    return value.strip()


def require_answer(value: Any) -> str:
    """A usable answer, else :class:`SkipRow` ("no_answer")."""
    text = answer_text(value)
    if not text:
        raise SkipRow("no_answer")
    return text


def boxed_answer_of(solution: Any) -> str:
    """The last ``\\boxed{}`` of a worked solution ("" when none)."""
    if not isinstance(solution, str):
        return ""
    return extract_boxed(solution) or ""


# ------------------------------------------------------------------------------ row parsers


def parse_dapo_row(row: Row, n: int) -> tuple[str, str, str, dict[str, Any]]:
    """DAPO-Math-17k: problem from the user message without DAPO's instructions."""
    prompt = row.get("prompt")
    content: Any = None
    if isinstance(prompt, list):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        content = users[-1].get("content") if users else None
    elif isinstance(prompt, str):
        content = prompt
    problem = require_text(content, "no_problem")
    if problem.startswith(DAPO_PREFIX.strip()):
        problem = problem[len(DAPO_PREFIX.strip()) :]
    if problem.endswith(DAPO_SUFFIX.strip()):
        problem = problem[: -len(DAPO_SUFFIX.strip())]
    problem = require_text(problem, "no_problem")
    reward_model = row.get("reward_model")
    gt = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    answer = require_answer(gt)
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    rid = str(extra.get("index", n)) if extra else str(n)
    meta: dict[str, Any] = {k: row[k] for k in ("data_source", "ability") if k in row}
    return rid, problem, answer, meta


def parse_math_row(row: Row, n: int) -> tuple[str, str, str, dict[str, Any]]:
    """MATH: answer field, else the last box of the solution."""
    problem = require_text(row.get("problem"), "no_problem")
    answer = answer_text(row.get("answer")) or boxed_answer_of(row.get("solution"))
    if not answer:
        raise SkipRow("no_answer")
    rid = str(first_field(row, ("unique_id", "id", "idx")) or n)
    meta: dict[str, Any] = {k: row[k] for k in ("level", "type", "subject") if k in row}
    return rid, problem, answer, meta


def parse_deepscaler_row(row: Row, n: int) -> tuple[str, str, str, dict[str, Any]]:
    """DeepScaleR-Preview: problem / answer (solution kept out of the prompt)."""
    problem = require_text(row.get("problem"), "no_problem")
    answer = answer_text(row.get("answer")) or boxed_answer_of(row.get("solution"))
    if not answer:
        raise SkipRow("no_answer")
    return str(first_field(row, ("id", "idx")) or n), problem, answer, {}


@dataclass(frozen=True)
class FieldMap:
    """Field names of a generic dataset.

    Attributes:
        problem: field holding the problem statement.
        answer: field holding the final answer.
        id: field holding a row id (row number when absent).
        solution: field whose last ``\\boxed{}`` is the answer when ``answer`` is missing.
    """

    problem: str = "problem"
    answer: str = "answer"
    id: str = "id"
    solution: str = "solution"

    def parser(self) -> RowParser:
        """A row parser reading these fields."""

        def parse(row: Row, n: int) -> tuple[str, str, str, dict[str, Any]]:
            problem = require_text(row.get(self.problem), "no_problem")
            answer = answer_text(row.get(self.answer)) or boxed_answer_of(row.get(self.solution))
            if not answer:
                raise SkipRow("no_answer")
            rid = row.get(self.id)
            return (str(rid) if rid is not None else str(n)), problem, answer, {}

        return parse


SCHEMAS: dict[str, RowParser] = {
    "dapo": parse_dapo_row,
    "math": parse_math_row,
    "deepscaler": parse_deepscaler_row,
    "generic": FieldMap().parser(),
}
"""Prompt-dataset schema name -> row parser."""


def load_rows(
    path: str | Path,
    parser: RowParser,
    source: str,
    *,
    dedup: bool = True,
    max_row_bytes: int = MAX_ROW_BYTES,
    log: bool = True,
) -> LoadResult:
    """Read ``path`` and turn each row into a :class:`PromptRecord` with ``parser``.

    Args:
        path: a .jsonl, .json or .parquet file.
        parser: ``(row, row_number) -> (id, problem, answer, metadata)``, raising
            :class:`SkipRow` for unusable rows.
        source: the name recorded in each record and in the report.
        dedup: skip rows whose (problem, answer) was already seen (counted as "duplicate").
        max_row_bytes: longer rows are skipped while reading ("too_long", see :func:`read_rows`).
        log: log the report's summary (a caller that adds to the report logs it itself).

    Returns:
        The records and a :class:`LoadReport`.
    """
    report = LoadReport(source=source, path=str(path))
    records: list[PromptRecord] = []
    seen: set[tuple[str, str]] = set()
    ids: set[str] = set()
    for n, row in read_rows(path, max_row_bytes):
        report.rows += 1
        where = f"row {n}"
        if isinstance(row, SkipRow):
            report.skip(row.reason, where)
            continue
        try:
            rid, problem, answer, meta = parser(row, n)
        except SkipRow as skip:
            report.skip(skip.reason, where)
            continue
        key = (problem, answer)
        if dedup and key in seen:
            report.skip("duplicate", where)
            continue
        seen.add(key)
        if rid in ids:  # keep ids unique within a source
            rid = f"{rid}#{n}"
        ids.add(rid)
        records.append(PromptRecord(rid, problem, answer, source, meta))
    if log:
        report.log()
    return LoadResult(records, report)


def load_prompts(
    path: str | Path,
    schema: str = "generic",
    *,
    fields: FieldMap | None = None,
    source: str | None = None,
    dedup: bool = True,
    max_row_bytes: int = MAX_ROW_BYTES,
    log: bool = True,
) -> LoadResult:
    """Load a training prompt set from a local file.

    Args:
        path: .jsonl / .json / .parquet file in the public schema of ``schema``.
        schema: one of ``SCHEMAS`` ("dapo", "math", "deepscaler", "generic").
        fields: field names for the "generic" schema.
        source: name for the records (default: the schema name).
        dedup: skip repeated (problem, answer) rows.
        max_row_bytes: longer rows are skipped while reading and counted ("too_long").
        log: log the report's summary.

    Example::

        result = load_prompts("dapo-math-17k.parquet", "dapo")
        print(result.report.summary())   # dapo: kept 17398 of 1791700 rows (skipped: ...)
    """
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {sorted(SCHEMAS)}, got {schema!r}")
    if fields is not None and schema != "generic":
        raise ValueError("fields= applies to the 'generic' schema only")
    parser = (fields or FieldMap()).parser() if schema == "generic" else SCHEMAS[schema]
    return load_rows(
        path, parser, source or schema, dedup=dedup, max_row_bytes=max_row_bytes, log=log
    )
