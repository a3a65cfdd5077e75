"""Evaluation metrics (pure, no model): avg@k, unbiased pass@k, mean (std), Table-1 formatting.

Input convention: ``correct`` is a 2-D 0/1 (or bool) array of shape ``[num_problems, k]`` — the
``k`` sampled responses of each problem, graded.

- ``avg_at_k``: pass@1 estimated with k samples = mean over problems and samples.
- ``pass_at_k``: the unbiased estimator of Chen et al. (2021), ``1 - C(n-c, k) / C(n, k)`` per
  problem with n samples of which c are correct, averaged over problems.
- ``per_prompt_std``: the std the ReNCE paper's Table 1 reports in parentheses. ReNCE is
  implemented in VERL, whose validation metrics give, per data source, ``mean@k`` and ``std@k``:
  for each problem the mean and the (population) std of its k rewards, averaged over problems.
  This convention reproduces the paper's numbers: its Avg column is the mean of the per-benchmark
  means *and* the mean of the per-benchmark stds (e.g. No training: (7.0+5.3+6.0+13.4+5.5+10.1)/6
  = 7.9, as printed), and MATH-500's std of ~4 points could not come from a std across four
  repeats of a 500-problem accuracy (that would be ~1 point).
- ``repeat_mean_std``: the other common convention, mean and std of the benchmark accuracy across
  the k repeats (repeat j = the j-th sample of every problem), available for comparison.

Example::

    correct = [[1, 1, 0, 1], [0, 0, 0, 0]]
    avg_at_k(correct)        # 0.375
    pass_at_k(correct, 2)    # (1 - C(1,2)/C(4,2) + 0) / 2 = 0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import comb

import numpy as np
from numpy.typing import ArrayLike


def _matrix(correct: ArrayLike) -> np.ndarray:
    """``correct`` as a float ``[num_problems, k]`` array, validated."""
    arr = np.asarray(correct, dtype=float)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"correct must have shape [num_problems, k] with both > 0, got {arr.shape}"
        )
    if np.isnan(arr).any() or ((arr != 0) & (arr != 1)).any():
        raise ValueError("correct must hold only 0/1 (or booleans)")
    return arr


def avg_at_k(correct: ArrayLike) -> float:
    """pass@1 estimated as avg@k: the mean correctness over problems and their k samples."""
    return float(_matrix(correct).mean())


def pass_at_k_single(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``n`` samples, ``c`` correct (Chen et al. 2021).

    ``1 - C(n - c, k) / C(n, k)``, computed exactly with integers.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def pass_at_k(correct: ArrayLike, k: int) -> float:
    """Unbiased pass@k averaged over problems (n = samples per problem >= k)."""
    arr = _matrix(correct)
    n = arr.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the samples per problem), got {k}")
    counts = arr.sum(axis=1).astype(int)
    return float(np.mean([pass_at_k_single(n, int(c), k) for c in counts]))


def per_prompt_std(correct: ArrayLike) -> float:
    """Mean over problems of the population std of each problem's k results (VERL ``std@k``)."""
    return float(_matrix(correct).std(axis=1).mean())


def repeat_mean_std(correct: ArrayLike, ddof: int = 0) -> tuple[float, float]:
    """Mean and std across the k repeats of the benchmark accuracy (repeat j = column j)."""
    per_repeat = _matrix(correct).mean(axis=0)
    if ddof >= per_repeat.size:
        raise ValueError(f"ddof={ddof} needs more than {per_repeat.size} repeats")
    return float(per_repeat.mean()), float(per_repeat.std(ddof=ddof))


@dataclass(frozen=True)
class BenchmarkScore:
    """One cell of Table 1, as fractions in [0, 1] (formatted in %).

    Attributes:
        mean: pass@1 as avg@k.
        std: the Table-1 std (:func:`per_prompt_std`).
        k: samples per problem.
        num_problems: problems graded.
    """

    mean: float
    std: float
    k: int
    num_problems: int


def benchmark_score(correct: ArrayLike) -> BenchmarkScore:
    """The Table-1 cell of one benchmark: avg@k and the per-prompt std."""
    arr = _matrix(correct)
    return BenchmarkScore(
        mean=avg_at_k(arr), std=per_prompt_std(arr), k=arr.shape[1], num_problems=arr.shape[0]
    )


def average_row(scores: Mapping[str, BenchmarkScore]) -> tuple[float, float]:
    """The Avg column: the mean of the benchmark means and the mean of their stds."""
    if not scores:
        raise ValueError("average of no benchmarks")
    return (
        float(np.mean([s.mean for s in scores.values()])),
        float(np.mean([s.std for s in scores.values()])),
    )


def format_table(
    results: Mapping[str, Mapping[str, BenchmarkScore]],
    benchmarks: Sequence[str],
    titles: Mapping[str, str] | None = None,
    *,
    decimals: int = 1,
    mark_best: bool = True,
) -> str:
    """A Markdown table like the ReNCE paper's Table 1: ``mean (std)`` in % plus an Avg column.

    Args:
        results: method -> benchmark name -> score. Every method needs every benchmark.
        benchmarks: the column order (benchmark names).
        titles: column titles by benchmark name (default: the names).
        decimals: digits after the decimal point.
        mark_best: bold the best mean of each column and underline the second best (HTML tags,
            as in the paper's source).
    """
    titles = titles or {}
    methods = list(results)
    for m in methods:
        missing = [b for b in benchmarks if b not in results[m]]
        if missing:
            raise ValueError(f"method {m!r} has no score for {missing}")
    columns = [*benchmarks, "__avg__"]
    means: dict[str, dict[str, float]] = {m: {} for m in methods}
    cells: dict[str, dict[str, str]] = {m: {} for m in methods}
    for m in methods:
        for b in benchmarks:
            s = results[m][b]
            means[m][b] = round(100 * s.mean, decimals)
            cells[m][b] = f"{100 * s.mean:.{decimals}f} ({100 * s.std:.{decimals}f})"
        avg_mean, avg_std = average_row({b: results[m][b] for b in benchmarks})
        means[m]["__avg__"] = round(100 * avg_mean, decimals)
        cells[m]["__avg__"] = f"{100 * avg_mean:.{decimals}f} ({100 * avg_std:.{decimals}f})"
    if mark_best and len(methods) > 1:
        for col in columns:
            ranked = sorted({means[m][col] for m in methods}, reverse=True)
            for m in methods:
                mean_text, _, rest = cells[m][col].partition(" ")
                if means[m][col] == ranked[0]:
                    cells[m][col] = f"<b>{mean_text}</b> {rest}"
                elif len(ranked) > 1 and means[m][col] == ranked[1]:
                    cells[m][col] = f"<u>{mean_text}</u> {rest}"
    header = ["Method"] + [titles.get(b, b) for b in benchmarks] + ["Avg"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for m in methods:
        lines.append("| " + " | ".join([m] + [cells[m][c] for c in columns]) + " |")
    return "\n".join(lines)
