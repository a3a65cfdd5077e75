"""CHAMP (``champ-dataset`` package): 270 competition problems with answers, a real small set.

The package ships one JSON file; we read it directly (no import of the package). CHAMP answers
are written for humans ("@@2*C(10, 5)@@, or equivalently @@504@@", "0 is the only possible
value", "No"). :func:`champ_answer` turns the verifiable ones into a single final answer; the
others (free-form sentences, several separate objects) are skipped and counted as "free_form".
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from nemo_rence.data.records import LoadReport, LoadResult, PromptRecord

_MARKED = re.compile(r"@@(.+?)@@")
_ONLY_VALUE = re.compile(r"^(-?\d+) is the only possible value$")
_IE = re.compile(r"^(-?\d+) \(i\.e\., [^)]*\)$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def champ_file() -> Path:
    """Path of the CHAMP JSON inside the installed ``champ-dataset`` package."""
    spec = importlib.util.find_spec("champ_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the champ-dataset package is not installed (pip install champ-dataset)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "dataset_files" / "v0.json"


def champ_answer(raw: str) -> str | None:
    """The single verifiable final answer of a CHAMP ``_raw_answer``, or None if free-form.

    ``"239"`` -> ``"239"``; ``"@@1/3@@"`` -> ``"1/3"``; ``"@@2*C(10, 5)@@, or equivalently
    @@504@@"`` -> ``"504"``; ``"0 is the only possible value"`` -> ``"0"``;
    ``"100 (i.e., all values)"`` -> ``"100"``; ``"No"`` -> ``"No"``.
    """
    text = raw.strip()
    if "or equivalently" in text:
        tail = text.rsplit("or equivalently", 1)[1].strip()
        marked = _MARKED.findall(tail)
        text = marked[-1] if marked else tail
        return text.strip() or None
    marked = _MARKED.findall(text)
    if len(marked) == 1 and _MARKED.sub("", text).strip() == "":
        return marked[0].strip()
    if marked:
        return None
    if _NUMBER.match(text) or text in ("Yes", "No"):
        return text
    for pattern in (_ONLY_VALUE, _IE):
        m = pattern.match(text)
        if m:
            return m.group(1)
    return None


def load_champ(path: str | Path | None = None) -> LoadResult:
    """CHAMP problems with a verifiable answer, as records of source "champ"."""
    file = Path(path) if path is not None else champ_file()
    with file.open(encoding="utf-8") as f:
        data = json.load(f)
    report = LoadReport(source="champ", path=str(file))
    records: list[PromptRecord] = []
    for key, p in data.get("problems", {}).items():
        report.rows += 1
        problem = p.get("_text") or (p.get("_raw_text") or "").replace("@@", "")
        raw = p.get("_raw_answer")
        if not isinstance(problem, str) or not problem.strip():
            report.skip("no_problem", key)
            continue
        answer = champ_answer(raw) if isinstance(raw, str) else None
        if not answer:
            report.skip("free_form" if raw else "no_answer", key)
            continue
        records.append(
            PromptRecord(
                id=str(p.get("identifier", key)),
                problem=problem.strip(),
                answer=answer,
                source="champ",
                metadata={"category": p.get("category")},
            )
        )
    report.log()
    return LoadResult(records, report)
