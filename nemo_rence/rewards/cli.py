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
import math
import os
import sys
import time
from pathlib import Path

from nemo_rence.rewards.math import REWARD_MODES
from nemo_rence.rewards.pool import GraderConfig, GraderPool, default_num_workers


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def _unwritable(path: str) -> str | None:
    """Why ``path`` cannot be written as the --output file, or None."""
    out = Path(path)
    parent = out.parent
    if out.is_dir():
        return "it is a directory"
    if not parent.is_dir():
        return f"its directory {parent} does not exist"
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        return "permission denied"
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``grade`` sub-command's arguments."""
    parser.add_argument("input", help="jsonl file, one object per response")
    parser.add_argument("--response-field", default="response", help="field holding the response")
    parser.add_argument("--answer-field", default="answer", help="field holding the gold answer")
    parser.add_argument("--mode", default="paper", choices=REWARD_MODES, help="reward values")
    parser.add_argument(
        "--workers", type=_positive_int, default=default_num_workers(), help="processes, >= 1"
    )
    parser.add_argument(
        "--timeout", type=_positive_seconds, default=5.0, help="hard seconds per item, > 0"
    )
    parser.add_argument(
        "--max-chars", type=_positive_int, default=32_768, help="response size limit, >= 1"
    )
    parser.add_argument("--output", default=None, help="write per-item results (jsonl) here")


def run(args: argparse.Namespace) -> int:
    """Grade the file; exit code 0, or 2 when the input cannot be read or the output written."""
    problem = _unwritable(args.output) if args.output else None
    if problem is not None:  # checked before grading anything
        print(f"nemo-rence grade: cannot write --output {args.output}: {problem}", file=sys.stderr)
        return 2
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
