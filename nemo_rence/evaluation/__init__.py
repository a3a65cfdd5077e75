"""Evaluation: pass@1 (avg@k), unbiased pass@k and the papers' mean (std) tables."""

from nemo_rence.evaluation.metrics import (
    BenchmarkScore,
    avg_at_k,
    benchmark_score,
    format_table,
    pass_at_k,
    per_prompt_std,
    repeat_mean_std,
)

__all__ = [
    "BenchmarkScore",
    "avg_at_k",
    "benchmark_score",
    "format_table",
    "pass_at_k",
    "per_prompt_std",
    "repeat_mean_std",
]
