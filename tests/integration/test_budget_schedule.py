"""``optim.lr_schedule_over=budget``: the lr schedule follows the spend budget, not the
iteration cap (a study's arms each go through the whole curve at their equal budget)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from tests.integration.test_study_cli import TINY  # 8 rollouts per iteration on the tiny model

SCHEDULE = [
    "run.eval_every=0",
    "optim.lr=1e-3",
    "optim.lr_schedule=cosine",
    "optim.min_lr_ratio=0.1",
]


def _cosine(t: float) -> float:
    return 1e-3 * (0.1 + 0.9 * (1 + math.cos(math.pi * min(t, 1.0))) / 2)


def test_the_cosine_schedule_runs_over_the_rollout_budget(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "nemo_rence",
        "train",
        *TINY,
        *SCHEDULE,
        "optim.lr_schedule_over=budget",
        "run.budget_kind=rollouts",
        "run.budget_amount=24",
        "run.iterations=100",  # a cap far away: the budget (3 iterations of 8) ends the run
        f"run.out_dir={out}",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "optim/lr" in r]
    assert [r["filter/rollouts"] for r in trained] == [8, 8, 8]
    for i, row in enumerate(trained):  # steps j = 0, 1 of iteration i at (8i + 8j/2) / 24
        expected = (_cosine(8 * i / 24) + _cosine((8 * i + 4) / 24)) / 2
        assert math.isclose(row["optim/lr"], expected, rel_tol=1e-9), (i, row["optim/lr"])
    # over the iteration cap instead, 6 of 200 steps would barely have decayed
    assert trained[-1]["optim/lr"] < 0.5e-3
