"""Grader throughput and latency: 1,024 realistic responses through GraderPool on 2 workers.

The batch is 128 prompts x K=8 rollouts, mixing what a trainer sees: correct answers in many
spellings (integers, fractions vs decimals, decimal commas, ``\\dfrac``, units, currency,
intervals, sets, two boxes for a list, symbolic forms that need math-verify), boxed wrong answers, unboxed answers, and hostile responses (1 MB texts,
10,000 nested braces, power towers, ``\\frac`` bombs, invalid UTF-8). Each response carries a few
KB of reasoning text before its final answer, like a real rollout.

Prints one JSON object: throughput (responses/s, wall clock for the whole batch, pool already
started), per-item grading latency p50/p99 for non-hostile items and max for hostile items (time
measured inside the worker), reward/method counts and the pool counters. Every batch uses fresh
problems, so no cache carries over between the measured batches.

Run: ``OMP_NUM_THREADS=1 python bench/grader_throughput.py [--batches 3] [--workers 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections import Counter

from nemo_rence.rewards.pool import GraderPool

FILLER = (
    "Let me think about this step by step. First, I restate the problem and identify what is "
    "asked. Then I set up the equations: let $x$ be the unknown, so $2x + 3 = 7$ gives $x = 2$. "
    "I double-check the arithmetic: $3 \\cdot 4 = 12$ and $12 - 5 = 7$. "
)

HOSTILE = [
    "a" * 1_000_000,
    "\\boxed{" + "{" * 10_000 + "4" + "}" * 10_000 + "}",
    r"\boxed{10^{10^{10^{10}}}}",
    "\\boxed{" + "\\frac{" * 200 + "1" + "}{2}" * 200 + "}",
    r"\boxed{((2^{999})^{999})^{999}}",
    b"\xff\xfe\xfa \\boxed{4} \xc3\x28",
    "\\boxed{" + "9" * 5000 + "}",
    r"\boxed{(100!)!}",
]


def _correct_forms(rng: random.Random) -> tuple[str, str]:
    """(boxed answer a model might write, gold) pairs that are equal."""
    a, b = rng.randint(1, 999), rng.randint(2, 97)
    choices = [
        (str(a), str(a)),
        (f"{a:,}" if a > 999 else str(a), str(a)),
        (rf"\dfrac{{{a}}}{{{b}}}", rf"\frac{{{a}}}{{{b}}}"),
        (rf"\frac{{{2 * a}}}{{{2 * b}}}", rf"\frac{{{a}}}{{{b}}}"),
        (f"{a / 4:g}", rf"\frac{{{a}}}{{4}}"),
        (rf"{a}\text{{ cm}}", str(a)),
        (rf"{a}^\circ", str(a)),
        (rf"{a}\%", str(a)),
        (rf"({a}, {b}]", rf"({a},{b}]"),
        (rf"\{{{b}, {a}\}}", rf"\{{{a},{b}\}}"),
        (rf"x = {a}", str(a)),
        (r"\text{(C)}", "C"),
        (rf"{a}\sqrt{{2}}", rf"\sqrt{{{2 * a * a}}}"),
        (rf"x^2+{b}x", rf"{b}x+x^2"),
        (rf"(x+{b})^2", rf"x^2+{2 * b}x+{b * b}"),
        (rf"\frac{{\sqrt{{3}}}}{{{b}}}", rf"\frac{{\sqrt3}}{{{b}}}"),
        (f"{a},{b:02d}", f"{a}.{b:02d}"),  # a decimal comma
        (rf"{a} \text{{ apples}}", str(a)),  # a unit in words
        (rf"\${a}", str(a)),  # currency
        (rf"{a}}}, \boxed{{{b}", f"{a}, {b}"),  # two boxes for a list gold
    ]
    # Weighted like real rollouts: most final answers are plain numbers.
    weights = [30, 2, 8, 4, 6, 3, 2, 2, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1]
    return rng.choices(choices, weights=weights)[0]


def make_batch(n: int, seed: int, group: int = 8) -> tuple[list[object], list[str], list[bool]]:
    """``n`` responses (``group`` rollouts per prompt), their golds, and which are hostile."""
    rng = random.Random(seed)
    responses: list[object] = []
    golds: list[str] = []
    hostile: list[bool] = []
    while len(responses) < n:
        right, gold = _correct_forms(rng)  # one prompt: its gold and the correct spelling
        for _ in range(min(group, n - len(responses))):
            kind = rng.choices(["correct", "wrong", "unboxed", "hostile"], weights=[45, 27, 20, 8])[
                0
            ]
            pred = right
            reasoning = FILLER * rng.randint(3, 12)
            golds.append(gold)
            hostile.append(kind == "hostile")
            if kind == "hostile":
                responses.append(rng.choice(HOSTILE))
                continue
            if kind == "wrong":  # a random number, a fraction, or the right form off by one
                pred = rng.choice(
                    [
                        str(rng.randint(1, 10_000)),
                        rf"\frac{{{rng.randint(1, 50)}}}{{7}}",
                        right + "+1",
                    ]
                )
            if kind == "unboxed":
                responses.append(f"{reasoning}\nTherefore the answer is {pred}.")
            else:
                responses.append(f"{reasoning}\nTherefore the final answer is $\\boxed{{{pred}}}$.")
    return responses, golds, hostile


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()

    with GraderPool(num_workers=args.workers, timeout_s=args.timeout) as pool:
        pool.score_batch([r"\boxed{1}"] * 8, ["1"] * 8)  # wait until every worker is up
        runs = []
        normal_lat: list[float] = []
        hostile_lat: list[float] = []
        rewards: Counter[str] = Counter()
        methods: Counter[str] = Counter()
        for b in range(args.batches):
            responses, golds, hostile = make_batch(args.batch_size, seed=1000 + b)
            start = time.perf_counter()
            results = pool.score_batch(responses, golds)
            wall = time.perf_counter() - start
            runs.append(
                {"seconds": round(wall, 3), "responses_per_s": round(len(results) / wall, 1)}
            )
            for r, h in zip(results, hostile, strict=True):
                (hostile_lat if h else normal_lat).append(r.elapsed_s)
                rewards[str(r.reward)] += 1
                methods[r.method] += 1
        counters = dict(pool.counters)
    rates = [r["responses_per_s"] for r in runs]
    report = {
        "benchmark": "grader_throughput",
        "batch_size": args.batch_size,
        "batches": args.batches,
        "workers": args.workers,
        "timeout_s": args.timeout,
        "responses_per_s_median": statistics.median(rates),
        "runs": runs,
        "latency_ms_non_hostile": {
            "p50": round(1e3 * percentile(normal_lat, 50), 3),
            "p99": round(1e3 * percentile(normal_lat, 99), 3),
            "max": round(1e3 * max(normal_lat), 3),
            "count": len(normal_lat),
        },
        "latency_ms_hostile": {
            "p50": round(1e3 * percentile(hostile_lat, 50), 3),
            "max": round(1e3 * max(hostile_lat), 3) if hostile_lat else None,
            "count": len(hostile_lat),
        },
        "rewards": dict(rewards),
        "methods": dict(methods),
        "counters": counters,
        "targets": {"responses_per_s": ">= 500", "p99_ms_non_hostile": "< 50"},
        "env": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
