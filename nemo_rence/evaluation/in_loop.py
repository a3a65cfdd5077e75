"""Evaluation inside a training run: held-out greedy accuracy and the ``eval.benchmarks``.

The trainer decides *when* (before training, every ``run.eval_every`` / ``eval.every``
iterations, after) and logs the numbers; this module computes them with the rollout engine the
run already holds, through the same code as ``nemo-rence eval``
(:func:`~nemo_rence.evaluation.runner.evaluate_benchmark`) and as training's rollouts
(:func:`~nemo_rence.rollout.graded.generate_and_grade`):

* held-out (``validate``): one greedy response per prompt; ``eval/accuracy`` = boxed and
  correct, ``eval/boxed``, ``eval/reward``, ``eval/response_tokens``, plus one sample row per
  prompt (``samples/eval-*.jsonl``, which the study report resamples);
* benchmarks: ``eval.k`` samples per problem at ``eval.temperature``; ``eval/<name>/avg@k``,
  ``eval/<name>/std`` (the paper's per-problem std), ``eval/<name>/pass@k`` and ``eval/avg``
  (the mean of the benchmarks' avg@k, what ``checkpoints/best`` follows when benchmarks are set).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nemo_rence.config import TrainConfig
from nemo_rence.data.records import PromptRecord
from nemo_rence.rewards.protocol import RewardFn
from nemo_rence.rollout import GenerationEngine, SamplingParams
from nemo_rence.rollout.graded import generate_and_grade

__all__ = ["benchmark_metrics", "heldout_metrics", "write_benchmark_outputs"]


def heldout_metrics(
    engine: GenerationEngine,
    records: Sequence[PromptRecord],
    prompt_ids: Sequence[Sequence[int]],
    greedy: SamplingParams,
    *,
    decode: Callable[[Sequence[int]], str],
    reward: RewardFn,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy pass@1 on held-out prompts: (metrics, one sample row per prompt)."""
    graded = generate_and_grade(engine, records, prompt_ids, greedy, decode=decode, reward=reward)
    out, texts, results = graded.rollouts, graded.texts, graded.results
    samples = [
        {
            "id": rec.id,
            "problem": rec.problem,
            "answer": rec.answer,
            "response": text,
            "extracted": res.extracted,
            "reward": res.reward,
            "correct": bool(res.correct and res.boxed),
        }
        for rec, text, res in zip(records, texts, results, strict=True)
    ]
    n = len(results)
    metrics = {
        "eval/accuracy": sum(r.correct and r.boxed for r in results) / n,
        "eval/boxed": sum(r.boxed for r in results) / n,
        "eval/reward": sum(r.reward for r in results) / n,
        "eval/response_tokens": sum(out.lengths) / n,
    }
    return metrics, samples


def benchmark_metrics(
    cfg: TrainConfig,
    benchmarks: Sequence[tuple[Any, Any]],
    iteration: int,
    *,
    engine: GenerationEngine,
    encode: Callable[[PromptRecord], list[int]],
    decode: Callable[[Sequence[int]], str],
    reward: RewardFn,
    stop_token_ids: tuple[int, ...],
) -> tuple[dict[str, float], list[Any]]:
    """Each benchmark with ``eval.k`` samples per problem: (metrics, ``BenchmarkResult`` list).

    Sampling seeds come from their own stream (run seed, iteration), so the training streams
    are untouched. A benchmark whose every prompt is too long has no avg@k (its report counts
    the prompts) and is left out of ``eval/avg``.
    """
    from nemo_rence.evaluation.inputs import EvalSettings
    from nemo_rence.evaluation.runner import benchmark_json, evaluate_benchmark

    e = cfg.eval
    settings = EvalSettings(
        k=e.k, temperature=e.temperature, top_p=e.top_p, batch_size=e.batch_size
    )
    rng = random.Random(cfg.run.seed * 1_000_003 + iteration)
    metrics: dict[str, float] = {}
    results, averages = [], []
    for bench, loaded in benchmarks:
        result = evaluate_benchmark(
            bench,
            loaded,
            engine=engine,
            encode=encode,
            decode=decode,
            reward=reward,
            settings=settings,
            max_prompt_tokens=cfg.data.max_prompt_tokens,
            max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens,
            stop_token_ids=stop_token_ids,
            rng=rng,
        )
        results.append(result)
        entry = benchmark_json(result)
        if entry["avg_at_k"] is None:
            continue
        name, k = bench.name, e.k
        metrics[f"eval/{name}/avg@{k}"] = entry["avg_at_k"]
        metrics[f"eval/{name}/std"] = entry["std"]
        metrics[f"eval/{name}/pass@{k}"] = entry["pass_at_k"][str(k)]
        averages.append(entry["avg_at_k"])
    if averages:
        metrics["eval/avg"] = sum(averages) / len(averages)
    return metrics, results


def write_benchmark_outputs(
    out: Path, cfg: TrainConfig, iteration: int, tag: str, results: Sequence[Any]
) -> str:
    """``results.json`` / ``results.md`` / ``samples.jsonl`` under ``out``, as ``nemo-rence eval``
    writes them; returns the Markdown table (Table 1 layout)."""
    from nemo_rence.evaluation.runner import render_markdown, results_json, write_outputs

    e = cfg.eval
    settings = {
        "k": e.k,
        "temperature": e.temperature,
        "top_p": e.top_p,
        "max_new_tokens": e.max_new_tokens or cfg.rollout.max_new_tokens,
        "engine": cfg.rollout.engine,
        "seed": cfg.run.seed,
    }
    label = f"iteration {iteration} ({tag})"
    doc = results_json(label, {"iteration": iteration}, settings, list(results))
    table = render_markdown(doc)
    write_outputs(out, doc, list(results), table)
    return table
