"""``nemo-rence grade``: grade a jsonl of responses with the math reward.

Each input line is a JSON object with a response and a gold answer (field names configurable).
Prints a one-line summary to stderr and a JSON summary to stdout; ``--output`` writes one JSON
result per input line.

Example::

    nemo-rence grade rollouts.jsonl --response-field completion --answer-field answer --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from nemo_rence.rewards.math import REWARD_MODES
from nemo_rence.rewards.pool import GraderConfig, GraderPool, default_num_workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``grade`` sub-command's arguments."""
    parser.add_argument("input", help="jsonl file, one object per response")
    parser.add_argument("--response-field", default="response", help="field holding the response")
    parser.add_argument("--answer-field", default="answer", help="field holding the gold answer")
    parser.add_argument("--mode", default="paper", choices=REWARD_MODES, help="reward values")
    parser.add_argument("--workers", type=int, default=default_num_workers(), help="processes")
    parser.add_argument("--timeout", type=float, default=5.0, help="hard seconds per item")
    parser.add_argument("--max-chars", type=int, default=32_768, help="response size limit")
    parser.add_argument("--output", default=None, help="write per-item results (jsonl) here")


def run(args: argparse.Namespace) -> int:
    """Grade the file; exit code 0, or 2 when the input cannot be read."""
    responses: list[object] = []
    golds: list[object] = []
    bad = 0
    try:
        with open(args.input, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                if not isinstance(row, dict) or args.answer_field not in row:
                    bad += 1
                    continue
                responses.append(row.get(args.response_field))
                golds.append(row[args.answer_field])
    except OSError as exc:
        print(f"nemo-rence grade: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    config = GraderConfig(
        num_workers=args.workers, timeout_s=args.timeout, max_chars=args.max_chars, mode=args.mode
    )
    start = time.perf_counter()
    with GraderPool(config=config) as pool:
        results = pool.score_batch(responses, golds)
        counters = dict(pool.counters)
    seconds = time.perf_counter() - start
    n = len(results)
    summary = {
        "items": n,
        "skipped_rows": bad,
        "mean_reward": sum(r.reward for r in results) / n if n else 0.0,
        "accuracy": sum(r.correct for r in results) / n if n else 0.0,
        "boxed_rate": sum(r.boxed for r in results) / n if n else 0.0,
        "seconds": round(seconds, 3),
        **counters,
    }
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            for r in results:
                out.write(json.dumps(dataclasses.asdict(r)) + "\n")
    print(
        f"graded {n} responses in {seconds:.2f} s: accuracy {summary['accuracy']:.3f}, "
        f"boxed {summary['boxed_rate']:.3f}, timeouts {counters['rewards/timeouts']}, "
        f"skipped rows {bad}",
        file=sys.stderr,
    )
    print(json.dumps(summary))
    return 0
