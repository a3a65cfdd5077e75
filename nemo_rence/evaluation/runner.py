"""Sample k responses per benchmark problem, grade them, and write results.json / results.md.

One :func:`evaluate_benchmark` call::

    records --encode--> prompt ids (too long: skipped, counted "prompt_too_long")
            --engine.generate(n=k)--> k responses per problem (batch_size prompts per call)
            --reward.batch--> correct = boxed and equivalent to the answer
            --> correct[num_problems, k] (0/1), one samples.jsonl row per response

The numbers come from :mod:`nemo_rence.evaluation.metrics`: pass@1 as avg@k, the Table-1 std
(:func:`~nemo_rence.evaluation.metrics.per_prompt_std`: per-problem std of the k samples,
averaged over problems, as the ReNCE paper and VERL report it), unbiased pass@k, and the
across-repeats mean/std for comparison. Scores are fractions in results.json and % in
results.md. :func:`render_markdown` formats a table from results.json documents alone, so a table
of several evaluations (``--compare``) is rebuilt from their files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nemo_rence.data.records import LoadResult, PromptRecord
from nemo_rence.evaluation.inputs import BenchmarkFile, EvalSettings
from nemo_rence.evaluation.metrics import (
    BenchmarkScore,
    avg_at_k,
    format_table,
    pass_at_k,
    per_prompt_std,
    repeat_mean_std,
)
from nemo_rence.rewards.protocol import RewardFn
from nemo_rence.rollout import GenerationEngine, SamplingParams
from nemo_rence.rollout.graded import generate_and_grade

__all__ = [
    "STD_CONVENTION",
    "BenchmarkResult",
    "benchmark_json",
    "evaluate_benchmark",
    "render_markdown",
    "results_json",
    "write_outputs",
]

FORMAT_VERSION = 1
STD_CONVENTION = (
    "std = per-problem population std of the k samples' correctness, averaged over problems "
    "(VERL std@k; the ReNCE paper's Table 1); Avg = mean of the benchmark means and of their "
    "stds; repeat_std = std across the k repeats of the benchmark accuracy, for comparison"
)


@dataclass
class BenchmarkResult:
    """The graded samples of one benchmark.

    Attributes:
        bench: the ``--benchmarks`` entry.
        loaded: the loader's records and skip report.
        ids: ids of the evaluated problems (rows of ``correct``).
        correct: ``[num_problems, k]`` 0/1, sample j of problem i at ``[i, j]``.
        samples: one dict per response (the samples.jsonl rows).
        skipped: skip reason -> rows (the loader's plus "prompt_too_long").
        examples: skip reason -> example row locations.
    """

    bench: BenchmarkFile
    loaded: LoadResult
    ids: list[str]
    correct: np.ndarray
    samples: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)


def evaluate_benchmark(
    bench: BenchmarkFile,
    loaded: LoadResult,
    *,
    engine: GenerationEngine,
    encode: Callable[[PromptRecord], list[int]],
    decode: Callable[[Sequence[int]], str],
    reward: RewardFn,
    settings: EvalSettings,
    max_prompt_tokens: int,
    max_new_tokens: int,
    stop_token_ids: tuple[int, ...],
    rng: random.Random,
) -> BenchmarkResult:
    """Generate ``settings.k`` responses per problem and grade them (see the module docstring).

    ``reward`` is a RewardFn (``batch(records, responses) -> list[RewardResult]``); ``rng``
    draws one sampling seed per generate call.
    """
    skipped = dict(loaded.report.skipped)
    examples = {r: list(v) for r, v in loaded.report.examples.items()}
    records: list[PromptRecord] = []
    prompts: list[list[int]] = []
    for rec in loaded.records:
        ids = encode(rec)
        if len(ids) > max_prompt_tokens:
            skipped["prompt_too_long"] = skipped.get("prompt_too_long", 0) + 1
            examples.setdefault("prompt_too_long", []).append(f"id {rec.id}")
            continue
        records.append(rec)
        prompts.append(ids)
    k = settings.k
    correct = np.zeros((len(records), k), dtype=np.int64)
    samples: list[dict[str, Any]] = []
    for start in range(0, len(records), settings.batch_size):
        chunk = records[start : start + settings.batch_size]
        params = SamplingParams(
            n=k,
            temperature=settings.temperature,
            top_p=settings.top_p if settings.temperature > 0 else 1.0,
            max_new_tokens=max_new_tokens,
            stop_token_ids=stop_token_ids,
            seed=rng.randrange(2**31),
        )
        graded = generate_and_grade(
            engine, chunk, prompts[start : start + len(chunk)], params, decode=decode, reward=reward
        )
        out = graded.rollouts
        seen = [0] * len(chunk)
        for row, (i, text, res) in enumerate(
            zip(out.prompt_index, graded.texts, graded.results, strict=True)
        ):
            j, seen[i] = seen[i], seen[i] + 1
            if j >= k:
                raise RuntimeError(f"the engine returned more than n={k} responses for a prompt")
            ok = bool(res.correct and res.boxed)
            correct[start + i, j] = int(ok)
            rec = chunk[i]
            samples.append(
                {
                    "benchmark": bench.name,
                    "id": rec.id,
                    "sample": j,
                    "problem": rec.problem,
                    "answer": rec.answer,
                    "response": text,
                    "extracted": res.extracted,
                    "boxed": bool(res.boxed),
                    "correct": ok,
                    "reward": float(res.reward),
                    "timed_out": bool(res.timed_out),
                    "finish_reason": out.finish_reason[row],
                    "response_tokens": len(out.token_ids[row]),
                }
            )
        if seen != [k] * len(chunk):
            raise RuntimeError(f"the engine returned {seen} responses per prompt, expected {k}")
    return BenchmarkResult(
        bench, loaded, [r.id for r in records], correct, samples, skipped, examples
    )


def _pass_ks(k: int) -> list[int]:
    """pass@j reported for j = 1, 2, 4, ... up to k, and k."""
    ks = [1]
    while ks[-1] * 2 <= k:
        ks.append(ks[-1] * 2)
    return sorted({*ks, k})


def benchmark_json(result: BenchmarkResult) -> dict[str, Any]:
    """The results.json entry of one benchmark (scores as fractions in [0, 1])."""
    corr, samples = result.correct, result.samples
    entry: dict[str, Any] = {
        "title": result.bench.title,
        "file": str(result.bench.path),
        "schema": result.bench.schema,
        "num_problems": int(corr.shape[0]),
        "k": int(corr.shape[1]),
        "rows": result.loaded.report.rows,
        "skipped": result.skipped,
        "skipped_examples": result.examples,
    }
    if corr.shape[0] == 0:  # every prompt was too long
        return {**entry, "avg_at_k": None, "std": None, "pass_at_k": {}, "ids": [], "correct": []}
    repeat_mean, repeat_std = repeat_mean_std(corr)
    n = len(samples)
    entry.update(
        avg_at_k=avg_at_k(corr),
        std=per_prompt_std(corr),
        pass_at_k={str(j): pass_at_k(corr, j) for j in _pass_ks(corr.shape[1])},
        repeat_mean=repeat_mean,
        repeat_std=repeat_std,
        boxed_rate=sum(s["boxed"] for s in samples) / n,
        truncated_rate=sum(s["finish_reason"] == "length" for s in samples) / n,
        mean_response_tokens=sum(s["response_tokens"] for s in samples) / n,
        grader_timeouts=sum(s["timed_out"] for s in samples),
        ids=result.ids,
        correct=corr.tolist(),
    )
    return entry


def results_json(
    label: str,
    checkpoint: Mapping[str, Any],
    settings: Mapping[str, Any],
    results: Sequence[BenchmarkResult],
) -> dict[str, Any]:
    """The results.json document: settings, per-benchmark entries and the Avg column."""
    benchmarks = {r.bench.name: benchmark_json(r) for r in results}
    scored = [b for b in benchmarks.values() if b["avg_at_k"] is not None]
    average = {
        "avg_at_k": float(np.mean([b["avg_at_k"] for b in scored])) if scored else None,
        "std": float(np.mean([b["std"] for b in scored])) if scored else None,
    }
    return {
        "format": FORMAT_VERSION,
        "label": label,
        "checkpoint": dict(checkpoint),
        "settings": dict(settings),
        "std_convention": STD_CONVENTION,
        "benchmarks": benchmarks,
        "average": average,
        "samples_file": "samples.jsonl",
    }


def _scores(doc: Mapping[str, Any], names: Sequence[str], where: str) -> dict[str, BenchmarkScore]:
    out = {}
    for name in names:
        b = doc["benchmarks"].get(name)
        if b is None or b["avg_at_k"] is None:
            raise ValueError(f"{where} has no score for benchmark {name!r}")
        out[name] = BenchmarkScore(b["avg_at_k"], b["std"], b["k"], b["num_problems"])
    return out


def render_markdown(doc: Mapping[str, Any], others: Sequence[Mapping[str, Any]] = ()) -> str:
    """results.md: a Table-1 style table (rows: this evaluation, then ``others``) and notes.

    Columns are ``doc``'s benchmarks in order, then Avg; cells are ``mean (std)`` in % with one
    decimal. With ``others`` the best mean of each column is bold and the second underlined.
    """
    names = [n for n, b in doc["benchmarks"].items() if b["avg_at_k"] is not None]
    titles = {n: doc["benchmarks"][n]["title"] for n in names}
    rows = {doc["label"]: _scores(doc, names, "this evaluation")}
    for other in others:
        rows[other["label"]] = _scores(other, names, f"compared evaluation {other['label']!r}")
    s = doc["settings"]
    k = s["k"]
    lines = [
        f"# Evaluation: {doc['label']}",
        "",
        f"pass@1 (avg@{k}) in %, as mean (std) over {k} samples per problem; temperature "
        f"{s['temperature']}, top-p {s['top_p']}, up to {s['max_new_tokens']} new tokens, "
        f"engine {s['engine']}, seed {s['seed']}. The std is the per-problem std of the {k} "
        "samples averaged over problems (the ReNCE paper's Table 1); Avg is the mean of the "
        "benchmark means and of their stds.",
        "",
        format_table(rows, names, titles),
        "",
        "| Benchmark | Problems | Rows skipped | pass@k |",
        "|---|---|---|---|",
    ]
    for b in doc["benchmarks"].values():
        skipped = ", ".join(f"{r} {n}" for r, n in sorted(b["skipped"].items())) or "none"
        passes = ", ".join(f"pass@{j} {100 * v:.1f}" for j, v in b["pass_at_k"].items()) or "-"
        lines.append(f"| {b['title']} | {b['num_problems']} | {skipped} | {passes} |")
    return "\n".join(lines) + "\n"


def write_outputs(
    out_dir: Path, doc: Mapping[str, Any], results: Sequence[BenchmarkResult], markdown: str
) -> None:
    """Write results.json, results.md and samples.jsonl under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "samples.jsonl").open("w", encoding="utf-8") as f:
        for r in results:
            for row in r.samples:
                f.write(json.dumps(row) + "\n")
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown)
