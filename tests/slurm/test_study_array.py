"""``nemo-rence study --executor slurm`` on the loopback cluster: one job array through
``slurm/submit.sh``, one task per arm x seed, each task an ordinary resumable run directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.slurm.cluster import _env, logs, requires_slurm, wait_for

pytestmark = [requires_slurm, pytest.mark.usefixtures("slurm_cluster"), pytest.mark.timeout(900)]

TINY = [
    "model=tiny",
    "filter.enabled=false",
    "filter.batch_size=2",
    "rollout.prompts_per_draw=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=12",
    "optim.mini_batch_size=2",  # one step over the whole batch
    "optim.n_update=1",
    "data.max_prompt_tokens=512",
    "run.eval_size=4",
    "run.threads=1",
    "run.time_budget_min=0",
]


def test_study_runs_as_a_job_array_with_one_task_per_run(tmp_path: Path) -> None:
    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "array",
                "arms": [
                    {"name": "rence", "overrides": ["algorithm=rence"]},
                    {"name": "grpo", "overrides": ["algorithm=grpo"]},
                ],
                "seeds": [0],
                "overrides": TINY,
                "budget": {"kind": "optimizer_steps", "amount": 1},
                "max_iterations": 5,
                "executor": "slurm",
                "slurm": {"gpus_per_node": 0, "ntasks_per_node": 1, "time": "00:10:00"},
            }
        )
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nemo_rence", "study", str(study_file), "--out-dir", str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--array=0-1" in proc.stdout

    def finished() -> bool:
        runs = [out / "rence" / "seed0", out / "grpo" / "seed0"]
        for run in runs:
            path = run / "metrics.jsonl"
            lines = path.read_text().splitlines() if path.is_file() else []
            if not lines or not json.loads(lines[-1]).get("eval/is_after"):
                return False
        return True

    try:
        wait_for(finished, 600, "both array tasks to finish their runs", poll=2.0)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{logs(out)}") from err
    report = subprocess.run([*cmd, "--report-only"], env=_env(), capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert "2 of 2 runs done" in report.stdout
    summary = json.loads((out / "study.json").read_text())
    assert [a["arm"] for a in summary["arms"]] == ["rence", "grpo"]
    assert all(r["spent"] == 1 and r["iterations"] == 1 for r in summary["runs"])
