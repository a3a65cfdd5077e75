"""The real launcher (slurm/submit.sh -> slurm/train.sbatch -> srun) on a real SLURM cluster.

A 2-task gloo job (``nemo_rence.infra.dist_check``, which follows the trainer's contract) proves
the rendezvous from SLURM variables, the run directory layout and the preemption protocol:
SIGUSR1 to the batch shell -> forwarded to the tasks -> checkpoint -> requeue -> resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.slurm.cluster import (
    logs,
    metrics_lines,
    release_requeued,
    requires_slurm,
    run,
    submit,
    wait_done,
    wait_for,
)

pytestmark = [requires_slurm, pytest.mark.usefixtures("slurm_cluster"), pytest.mark.timeout(420)]

DIST_CHECK = "python -m nemo_rence.infra.dist_check"


def test_two_task_gloo_job_completes_with_ranks_from_slurm(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    job = submit(run_dir, DIST_CHECK, ["--out", str(run_dir), "--steps", "2"])
    info = wait_done(job, timeout=180)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, logs(run_dir))
    report = json.loads((run_dir / "dist_check.json").read_text())
    assert report["world_size"] == 2 and report["allreduce_sum"] == 3.0
    assert report["steps"] == 2 and report["resumed_from"] is None
    assert report["slurm_job_id"] == str(job)
    assert [m["step"] for m in metrics_lines(run_dir)] == [1, 2]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "iter-000002"
    # one log per task and the batch log, all under the run directory
    names = {p.name for p in (run_dir / "logs").iterdir()}
    assert {f"{job}-0.log", f"{job}-1.log", f"slurm-{job}.out"} <= names, names


def test_sigusr1_checkpoints_requeues_and_resumes_from_latest(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    steps = 40
    job = submit(
        run_dir, DIST_CHECK, ["--out", str(run_dir), "--steps", str(steps), "--step-seconds", "0.3"]
    )
    wait_for(lambda: len(metrics_lines(run_dir)) >= 3, 120, "3 steps before the signal", job)
    # What --signal=B:USR1@120 does 120 s before the time limit: SIGUSR1 to the batch shell.
    run(["scancel", "--signal=USR1", "--batch", str(job)])
    release_requeued(job, timeout=120)
    info = wait_done(job, timeout=240)
    out = logs(run_dir)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, out)
    assert int(info["Restarts"]) == 1, info

    stopped = [line for line in out.splitlines() if "PREEMPTED at step" in line]
    assert len(stopped) == 1, out
    at = int(stopped[0].split("PREEMPTED at step ")[1].split(":")[0])
    assert 3 <= at < steps
    assert f"RESUMED from step {at} (iter-{at:06d})" in out
    report = json.loads((run_dir / "dist_check.json").read_text())
    assert report["resumed_from"] == at and report["restart_count"] == 1
    # every step ran exactly once across the two runs of the job
    assert [m["step"] for m in metrics_lines(run_dir)] == list(range(1, steps + 1))
    assert "requeueing" in out and "received SIGUSR1" in out
