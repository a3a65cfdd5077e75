"""Helpers of the SLURM tests: submit ``slurm/submit.sh`` jobs and watch them, with timeouts.

The cluster is the one ``scripts/slurm/up.sh`` brought up; its ``env.sh`` exports
``NEMO_RENCE_SLURM_CONF`` (and ``SLURM_CONF``). Without it every test that needs a cluster is
skipped with that reason (``requires_slurm``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUBMIT = REPO / "slurm" / "submit.sh"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def slurm_problem() -> str | None:
    """Why no SLURM test can run here (None: a cluster answers)."""
    conf = os.environ.get("NEMO_RENCE_SLURM_CONF")
    if not conf:
        return "no SLURM cluster: run scripts/ci_slurm.sh (sets NEMO_RENCE_SLURM_CONF)"
    if shutil.which("sbatch") is None:
        return "sbatch is not installed"
    try:
        ping = subprocess.run(
            ["scontrol", "ping"],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "scontrol ping timed out"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"slurmctld does not answer: {ping.stdout.strip()} {ping.stderr.strip()}"
    return None


requires_slurm = pytest.mark.skipif(
    not os.environ.get("NEMO_RENCE_SLURM_CONF"),
    reason="no SLURM cluster: run scripts/ci_slurm.sh (sets NEMO_RENCE_SLURM_CONF)",
)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The cluster named by NEMO_RENCE_SLURM_CONF must answer (a set variable and a dead cluster
    is a failure, not a skip: the bring-up said it was there)."""
    problem = slurm_problem()
    if problem:
        pytest.fail(problem)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    conf = env.get("NEMO_RENCE_SLURM_CONF")
    if conf:
        env["SLURM_CONF"] = conf
    # The job's tasks run this interpreter's environment (sbatch exports ours).
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{REPO}:{env.get('PYTHONPATH', '')}".rstrip(":")
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return env


def run(cmd: list[str], timeout: float = 30) -> str:
    """Run a SLURM client command; fail the test with its output when it fails."""
    proc = subprocess.run(
        cmd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def submit(run_dir: Path, entry: str, args: list[str], *, time_limit: str = "00:05:00") -> int:
    """``slurm/submit.sh`` a CPU job of 2 tasks on one node; returns the job id."""
    out = run(
        [
            "bash",
            str(SUBMIT),
            "--run-dir",
            str(run_dir),
            "--gpus-per-node",
            "0",
            "--ntasks-per-node",
            "2",
            "--time",
            time_limit,
            "--job-name",
            "nr-test",
            "--entry",
            entry,
            "--",
            *args,
        ]
    )
    return int(out.strip().split(";")[0])


def job_info(job: int) -> dict[str, str]:
    """``scontrol show job`` as a dict (JobState, ExitCode, Restarts, Reason ...)."""
    text = run(["scontrol", "show", "job", str(job)])
    return dict(re.findall(r"(\w+)=(\S*)", text))


def wait_for(predicate, timeout: float, what: str, job: int | None = None, poll: float = 0.5):
    """Poll ``predicate()`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    extra = f"\njob: {job_info(job)}" if job is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")


def wait_done(job: int, timeout: float) -> dict[str, str]:
    """Wait until the job has left the queue for good; return its final ``job_info``."""

    def done() -> dict[str, str] | None:
        info = job_info(job)
        state = info.get("JobState", "")
        return info if state in FINAL_STATES else None

    try:
        return wait_for(done, timeout, f"job {job} to finish", job)
    except AssertionError:
        subprocess.run(["scancel", str(job)], env=_env(), timeout=15, check=False)
        raise


def release_requeued(job: int, timeout: float = 60) -> None:
    """Wait until the requeued job is pending again, then make it eligible now (SLURM holds a
    requeued job back for its requeue delay, about two minutes, by default)."""

    def requeued() -> bool:
        info = job_info(job)
        if info.get("JobState") in FINAL_STATES:
            raise AssertionError(f"job {job} ended instead of being requeued: {info}")
        return int(info.get("Restarts", "0")) >= 1 and info.get("JobState") == "PENDING"

    wait_for(requeued, timeout, f"job {job} to be requeued", job)

    # slurmd revokes the old run's credential at the requeue, with 1-second resolution: a new
    # credential issued within the same second is refused ("Killing non-startable batch JobId=N:
    # Job credential revoked", seen in slurmctld.log about one run in four). SLURM's own requeue
    # delay avoids this; releasing the job early must wait out the revocation second first.
    time.sleep(2.5)
    run(["scontrol", "update", f"JobId={job}", "StartTime=now"])


def logs(run_dir: Path) -> str:
    """Every log of the run directory, for failure messages."""
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted((run_dir / "logs").glob("*"))
    )


def metrics_lines(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
