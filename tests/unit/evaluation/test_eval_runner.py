"""The eval runner on a scripted engine: the [problems, k] matrix, results.json numbers checked
by hand, prompts too long counted, and the Table-1 Markdown of a fixed results.json exactly."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

from nemo_rence.data.records import LoadReport, LoadResult, PromptRecord
from nemo_rence.evaluation.inputs import BenchmarkFile, EvalSettings
from nemo_rence.evaluation.runner import (
    benchmark_json,
    evaluate_benchmark,
    render_markdown,
    results_json,
)
from nemo_rence.rewards.math import RewardResult
from nemo_rence.rollout import Rollouts, SamplingParams


class _ScriptedEngine:
    """Answers prompt i with ``script[problem][j]`` for its j-th sample (bytes as token ids)."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.calls: list[SamplingParams] = []

    def generate(self, prompts, params: SamplingParams) -> Rollouts:
        self.calls.append(params)
        out = Rollouts()
        for i, p in enumerate(prompts):
            for j in range(params.n):
                text = self.script[bytes(p).decode()][j]
                out.prompt_index.append(i)
                out.token_ids.append(list(text.encode()))
                out.logprobs.append([0.0] * len(text))
                out.finish_reason.append("eos")
        return out


class _ExactReward:
    """Boxed answer string-equal to the gold answer: 1; boxed otherwise: 0.1; else 0."""

    def batch(self, records, responses):
        out = []
        for rec, text in zip(records, responses, strict=True):
            m = re.search(r"\\boxed\{([^}]*)\}", text)
            boxed, extracted = m is not None, (m.group(1) if m else None)
            ok = boxed and extracted == rec.answer
            out.append(RewardResult(1.0 if ok else 0.1 if boxed else 0.0, boxed, ok, extracted))
        return out


def _records(n: int) -> list[PromptRecord]:
    return [PromptRecord(f"q{i}", f"problem {i}", str(i), "toy") for i in range(n)]


def _run(records, script, k, *, max_prompt_tokens=100, batch_size=2, skipped=None):
    report = LoadReport(source="toy", rows=len(records) + sum((skipped or {}).values()))
    for reason, n in (skipped or {}).items():
        for _ in range(n):
            report.skip(reason, "row ?")
    engine = _ScriptedEngine(script)
    result = evaluate_benchmark(
        BenchmarkFile("toy", Path("toy.jsonl"), "generic", "Toy"),
        LoadResult(list(records), report),
        engine=engine,
        encode=lambda rec: list(rec.problem.encode()),
        decode=lambda ids: bytes(ids).decode(),
        reward=_ExactReward(),
        settings=EvalSettings(k=k, temperature=0.7, batch_size=batch_size),
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=32,
        stop_token_ids=(9,),
        rng=random.Random(0),
    )
    return result, engine


def test_correctness_matrix_and_scores_match_a_hand_computation():
    records = _records(3)
    script = {
        "problem 0": ["\\boxed{0}", "\\boxed{0}", "no box", "\\boxed{1}"],  # 2 of 4
        "problem 1": ["\\boxed{1}"] * 4,  # 4 of 4
        "problem 2": ["\\boxed{7}"] * 4,  # 0 of 4
    }
    result, engine = _run(records, script, k=4, skipped={"no_answer": 2})
    assert result.correct.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    assert [c.n for c in engine.calls] == [4, 4]  # batch_size=2: two generate calls
    assert all(c.temperature == 0.7 and c.stop_token_ids == (9,) for c in engine.calls)
    entry = benchmark_json(result)
    assert entry["avg_at_k"] == pytest.approx(6 / 12)
    assert entry["std"] == pytest.approx((0.5 + 0 + 0) / 3)  # population std per problem
    assert entry["pass_at_k"]["1"] == pytest.approx(0.5)
    assert entry["pass_at_k"]["4"] == pytest.approx(2 / 3)
    assert entry["pass_at_k"]["2"] == pytest.approx((1 - 1 / 6 + 1 + 0) / 3)  # 1 - C(2,2)/C(4,2)
    per_repeat = np.array([2, 2, 1, 1]) / 3
    assert entry["repeat_mean"] == pytest.approx(per_repeat.mean())
    assert entry["repeat_std"] == pytest.approx(per_repeat.std())
    assert entry["boxed_rate"] == pytest.approx(11 / 12)
    assert (entry["num_problems"], entry["rows"], entry["skipped"]) == (3, 5, {"no_answer": 2})
    assert entry["ids"] == ["q0", "q1", "q2"]
    rows = [(s["id"], s["sample"], s["correct"]) for s in result.samples]
    assert rows[:4] == [("q0", 0, True), ("q0", 1, True), ("q0", 2, False), ("q0", 3, False)]


def test_prompts_over_the_limit_are_skipped_and_counted():
    records = [*_records(2), PromptRecord("long", "x" * 50, "1", "toy")]
    script = {"problem 0": ["\\boxed{0}"], "problem 1": ["no"]}
    result, _ = _run(records, script, k=1, max_prompt_tokens=20)
    assert result.ids == ["q0", "q1"]
    assert result.skipped == {"prompt_too_long": 1}
    assert result.examples["prompt_too_long"] == ["id long"]


def test_results_json_average_is_the_mean_of_benchmark_means_and_stds():
    a, _ = _run(_records(1), {"problem 0": ["\\boxed{0}", "no"]}, k=2)
    b, _ = _run(_records(1), {"problem 0": ["\\boxed{0}", "\\boxed{0}"]}, k=2)
    b.bench = BenchmarkFile("other", Path("o.jsonl"), "generic", "Other")
    doc = results_json("m", {"kind": "hf"}, {"k": 2}, [a, b])
    assert list(doc["benchmarks"]) == ["toy", "other"]
    assert doc["average"] == {"avg_at_k": pytest.approx(0.75), "std": pytest.approx(0.25)}


def _fixed_doc(label: str, math_mean: float, aime_mean: float) -> dict:
    return {
        "label": label,
        "settings": {
            "k": 4,
            "temperature": 0.7,
            "top_p": 1.0,
            "max_new_tokens": 6656,
            "engine": "hf",
            "seed": 0,
        },
        "benchmarks": {
            "math500": {
                "title": "MATH-500",
                "avg_at_k": math_mean,
                "std": 0.042,
                "k": 4,
                "num_problems": 500,
                "skipped": {},
                "pass_at_k": {"1": math_mean, "2": 0.95, "4": 0.96},
            },
            "aime24": {
                "title": "AIME24",
                "avg_at_k": aime_mean,
                "std": 0.17,
                "k": 4,
                "num_problems": 30,
                "skipped": {"no_answer": 1, "prompt_too_long": 2},
                "pass_at_k": {"1": aime_mean, "2": 0.6, "4": 0.7},
            },
        },
    }


def test_markdown_is_the_papers_table_1_format_exactly():
    doc = _fixed_doc("ReNCE iter-000050", 0.9325, 0.533)
    other = _fixed_doc("base", 0.845, 0.325)
    expected = "\n".join(
        [
            "# Evaluation: ReNCE iter-000050",
            "",
            "pass@1 (avg@4) in %, as mean (std) over 4 samples per problem; temperature 0.7, "
            "top-p 1.0, up to 6656 new tokens, engine hf, seed 0. The std is the per-problem "
            "std of the 4 samples averaged over problems (the ReNCE paper's Table 1); Avg is "
            "the mean of the benchmark means and of their stds.",
            "",
            "| Method | MATH-500 | AIME24 | Avg |",
            "|---|---|---|---|",
            "| ReNCE iter-000050 | <b>93.2</b> (4.2) | <b>53.3</b> (17.0) | <b>73.3</b> (10.6) |",
            "| base | <u>84.5</u> (4.2) | <u>32.5</u> (17.0) | <u>58.5</u> (10.6) |",
            "",
            "| Benchmark | Problems | Rows skipped | pass@k |",
            "|---|---|---|---|",
            "| MATH-500 | 500 | none | pass@1 93.2, pass@2 95.0, pass@4 96.0 |",
            "| AIME24 | 30 | no_answer 1, prompt_too_long 2 | pass@1 53.3, pass@2 60.0, "
            "pass@4 70.0 |",
            "",
        ]
    )
    assert render_markdown(doc, [other]) == expected
    alone = render_markdown(doc)
    assert "| ReNCE iter-000050 | 93.2 (4.2) | 53.3 (17.0) | 73.3 (10.6) |" in alone


def test_markdown_rejects_a_compared_evaluation_missing_a_benchmark():
    doc, other = _fixed_doc("a", 0.5, 0.5), _fixed_doc("b", 0.5, 0.5)
    del other["benchmarks"]["aime24"]
    with pytest.raises(ValueError, match="'b' has no score for benchmark 'aime24'"):
        render_markdown(doc, [other])
