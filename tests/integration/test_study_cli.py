"""``nemo-rence study`` end to end on the tiny model: 2 arms x 2 seeds x 1 iteration at an
equal rollout budget, the report recomputed from the runs' own metrics, and the resume of a
half-finished study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

TINY = [
    "model=tiny",
    "filter.enabled=false",  # a random model never boxes an answer: keep every group
    "filter.batch_size=2",
    "rollout.prompts_per_draw=2",  # one draw of 2 prompts x K=4: 8 rollouts per iteration
    "rollout.group_size=4",
    "rollout.max_new_tokens=12",
    "optim.mini_batch_size=1",
    "optim.n_update=2",
    "data.max_prompt_tokens=512",
    "run.eval_size=4",
    "run.time_budget_min=0",
]
ARMS = {"rence": ["algorithm=rence"], "grpo": ["algorithm=grpo", "optim.n_update=2"]}


def _study_file(tmp: Path, metric: str = "eval/accuracy") -> Path:
    path = tmp / f"study-{metric.replace('/', '_')}.yaml"
    study = {
        "name": "tiny",
        "arms": [{"name": k, "overrides": v} for k, v in ARMS.items()],
        "seeds": [0, 1],
        "overrides": TINY,
        "budget": {"kind": "rollouts", "amount": 8},
        "max_iterations": 5,
        "metric": metric,
    }
    path.write_text(yaml.safe_dump(study))
    return path


def _study(*args: str | Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(
        [sys.executable, "-m", "nemo_rence", "study", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("study")
    out = _study(_study_file(tmp), "--out-dir", tmp / "out")
    assert "0 of 4 runs done" in out
    return tmp / "out"


def test_every_arm_and_seed_is_an_ordinary_finished_run_directory(study_dir):
    for arm in ARMS:
        for seed in (0, 1):
            run = study_dir / arm / f"seed{seed}"
            config = json.loads((run / "config.json").read_text())
            assert config["run"]["seed"] == seed
            assert (config["run"]["budget_kind"], config["run"]["budget_amount"]) == ("rollouts", 8)
            assert (run / "checkpoints" / "latest").exists()
            assert _rows(run)[-1].get("eval/is_after") == 1.0  # ended by its final evaluation
    assert (study_dir / "study.md").is_file() and (
        study_dir / "plots" / "learning_curves.png"
    ).is_file()


def test_each_arm_spends_exactly_the_budget(study_dir):
    for arm in ARMS:
        for seed in (0, 1):
            train = [r for r in _rows(study_dir / arm / f"seed{seed}") if "filter/rollouts" in r]
            # the budget stopped the run after one iteration of run.iterations=5
            assert [r["iteration"] for r in train] == [1]
            assert sum(r["filter/rollouts"] for r in train) == 8


def test_report_numbers_are_the_runs_own(study_dir):
    report = json.loads((study_dir / "study.json").read_text())
    for arm in report["arms"]:
        values = []
        for seed in (0, 1):
            last = [
                r for r in _rows(study_dir / arm["arm"] / f"seed{seed}") if "eval/accuracy" in r
            ]
            values.append(last[-1]["eval/accuracy"])  # the final evaluation, at 8 rollouts
        assert arm["values"] == values and arm["mean"] == pytest.approx(np.mean(values))
        assert arm["spent_mean"] == 8 and arm["done"] == 2
        assert arm["rollouts_per_accepted_prompt"] == pytest.approx(8 / 2)
        assert arm["over"] == "seeds x problems"  # samples/ hold each held-out problem


def test_report_of_a_varying_metric_recomputed_by_hand(study_dir, tmp_path):
    # a tiny random model scores 0 on the held-out set: check the arithmetic on a metric that
    # varies with the seed (the sampled rollouts' entropy, logged at iteration 1, spend 8)
    _study(_study_file(tmp_path, "rollout/entropy"), "--out-dir", study_dir, "--report-only")
    report = json.loads((study_dir / "study.json").read_text())
    per_seed = {
        arm: [
            next(
                r["rollout/entropy"]
                for r in _rows(study_dir / arm / f"seed{s}")
                if "rollout/entropy" in r
            )
            for s in (0, 1)
        ]
        for arm in ARMS
    }
    rence, grpo = report["arms"]
    assert rence["values"] == per_seed["rence"] and rence["over"] == "seeds"
    assert rence["ci"] == pytest.approx((min(per_seed["rence"]), max(per_seed["rence"])))
    diffs = [g - r for r, g in zip(per_seed["rence"], per_seed["grpo"], strict=True)]
    assert grpo["diff"]["mean"] == pytest.approx(np.mean(diffs))
    assert grpo["diff"]["ci"] == pytest.approx((min(diffs), max(diffs)))  # paired over seeds


def test_rerun_resumes_the_unfinished_run_and_skips_the_finished(study_dir, tmp_path):
    half = study_dir / "rence" / "seed1"  # killed after its checkpoint, before its final eval
    rows = _rows(half)
    keep = [r for r in rows if not r.get("eval/is_after")]
    (half / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    finished = study_dir / "grpo" / "seed0" / "metrics.jsonl"
    before = finished.stat().st_mtime_ns
    out = _study(_study_file(tmp_path), "--out-dir", study_dir)
    assert "3 of 4 runs done" in out and "[2/4] rence/seed1" in out
    assert "grpo/seed0 ->" not in out and finished.stat().st_mtime_ns == before
    resumed = _rows(half)
    # resumed from iteration 1 with its 8 rollouts recounted: no further iteration, final eval
    assert [r["iteration"] for r in resumed if "filter/rollouts" in r] == [1]
    assert resumed[-1].get("eval/is_after") == 1.0
    assert "budget:" in (study_dir / "logs" / "rence-seed1.log").read_text()
