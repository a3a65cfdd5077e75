"""``nemo-rence train`` through the real launcher: 2 tasks (TP=2, gloo), a tiny model.

Runs as soon as ``nemo_rence.train`` exists. The launcher's contract with the trainer (see
docs/cluster.md): it reads RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, writes
``<run.out_dir>/metrics.jsonl`` (one JSON object per iteration with an ``iteration`` key) and
checkpoints under ``<run.out_dir>/checkpoints/`` with a ``latest`` pointer, checkpoints and
exits 0 on SIGUSR1, and resumes from ``latest`` when started again with the same out_dir.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.slurm.cluster import (
    FINAL_STATES,
    job_info,
    logs,
    metrics_lines,
    release_requeued,
    requires_slurm,
    run,
    submit,
    wait_done,
    wait_for,
)

pytestmark = [
    requires_slurm,
    pytest.mark.skipif(
        importlib.util.find_spec("nemo_rence.train") is None, reason="needs nemo-rence train"
    ),
    pytest.mark.usefixtures("slurm_cluster"),
    pytest.mark.timeout(900),
]

# The CPU recipe (tiny model, TP=2, filter off) at even smaller sizes.
TINY_TP2 = [
    "+recipes=rence-tiny-1n2c-tp2",
    "filter.batch_size=2",
    "optim.mini_batch_size=2",
    "optim.n_update=1",
    "rollout.group_size=4",
    "rollout.max_new_tokens=16",
    "run.eval_size=4",
    "run.threads=1",
]


def _iteration(m: dict) -> int:
    assert "iteration" in m, f"metrics line without an iteration key: {sorted(m)}"
    return int(m["iteration"])


def _train_iterations(lines: list[dict]) -> list[int]:
    """Iterations of the training lines (evaluation lines carry eval/* keys only)."""
    return [_iteration(m) for m in lines if not any(k.startswith("eval/") for k in m)]


def test_train_two_iterations_tiny_model_tp2(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    job = submit(run_dir, "nemo-rence train", [*TINY_TP2, "run.iterations=2"])
    info = wait_done(job, timeout=600)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, logs(run_dir))
    assert _train_iterations(metrics_lines(run_dir)) == [1, 2]
    latest = run_dir / "checkpoints" / "latest"
    assert latest.exists(), sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_train_preempted_by_sigusr1_resumes_from_latest(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    iterations = 8
    job = submit(run_dir, "nemo-rence train", [*TINY_TP2, f"run.iterations={iterations}"])

    def started() -> bool:
        if job_info(job).get("JobState") in FINAL_STATES:
            raise AssertionError(f"job ended before the signal:\n{logs(run_dir)}")
        return len(metrics_lines(run_dir)) >= 1

    wait_for(started, 480, "the first metrics line", job)
    run(["scancel", "--signal=USR1", "--batch", str(job)])
    release_requeued(job, timeout=300)
    info = wait_done(job, timeout=600)
    out = logs(run_dir)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, out)
    assert int(info["Restarts"]) == 1, info
    assert (run_dir / "checkpoints" / "latest").exists()
    # Resumed, not restarted: every training iteration was logged exactly once over both runs.
    assert _train_iterations(metrics_lines(run_dir)) == list(range(1, iterations + 1)), out
