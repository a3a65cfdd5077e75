"""A run is never lost, through the real entry point on the tiny model: a missing ``latest``
pointer, a changed config, a corrupt checkpoint, a finished run, kill -9 (no process left behind)
and Ctrl-C; and ``nemo-rence train model=tiny`` on its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import alive, descendants
from tests.integration.test_train_cli import TINY, _cmd, _env, _iterations


def _run(out: Path, iterations: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _cmd(out, iterations, *extra), env=_env(), capture_output=True, text=True, timeout=600
    )


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _training_rows(out: Path) -> list[int]:
    return [
        json.loads(line)["iteration"]
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if "loss/total" in line
    ]


@pytest.fixture(scope="module")
def two_iterations(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "two"
    _ok(_run(out, 2))
    return out


@pytest.fixture
def run_copy(two_iterations, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(two_iterations, out)
    return out


def test_a_missing_latest_pointer_resumes_instead_of_restarting(run_copy):
    (run_copy / "checkpoints" / "latest").unlink()
    proc = _ok(_run(run_copy, 3))
    assert "latest is missing: resuming from iter-000002" in proc.stdout
    assert "run.iterations: 2 -> 3" in proc.stdout  # an allowed change, logged
    assert _training_rows(run_copy) == [1, 2, 3]  # not 1, 2, 1, 2, 3
    assert "FutureWarning" not in proc.stderr  # resuming is quiet


def test_a_changed_config_is_refused_with_the_diff_and_changes_nothing(run_copy):
    config = (run_copy / "config.json").read_text()
    metrics = (run_copy / "metrics.jsonl").read_text()
    proc = _run(run_copy, 2, "optim.lr=3e-4", "model.tiny_hidden=128", "algorithm=grpo")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lr = json.dumps(json.loads(config)["optim"]["lr"])  # the CPU scale's, as the diff prints it
    for line in (f"optim.lr: {lr} -> 0.0003", "model.tiny_hidden: 64 -> 128", "loss.name"):
        assert line in proc.stderr
    assert (run_copy / "config.json").read_text() == config
    assert (run_copy / "metrics.jsonl").read_text() == metrics


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(run_copy):
    broken = run_copy / "checkpoints" / "iter-000002" / "trainer.pt"
    broken.write_bytes(broken.read_bytes()[:100])
    proc = _ok(_run(run_copy, 2))
    assert f"skipping broken checkpoint(s): {broken}: 100 bytes" in proc.stdout
    assert "resuming from iter-000001" in proc.stdout
    assert (run_copy / "checkpoints" / "latest").read_text().strip() == "iter-000002"
    assert _training_rows(run_copy)[-1] == 2  # iteration 2 trained again


def test_rerunning_a_finished_run_says_so_and_adds_nothing(run_copy):
    metrics = (run_copy / "metrics.jsonl").read_text()
    proc = _ok(_run(run_copy, 2))
    assert "is finished: iteration 2 of run.iterations=2" in proc.stdout
    assert (run_copy / "metrics.jsonl").read_text() == metrics


def test_kill_9_leaves_no_process_behind_and_the_run_resumes(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(out, 3), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    children: list[int] = []
    try:
        latest = out / "checkpoints" / "latest"
        deadline = time.monotonic() + 300
        while not latest.is_file():  # graders started, megatron's writer too
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        children = descendants(proc.pid)
        assert children, "the trainer has helper processes (graders, resource tracker)"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(children), [
            Path(f"/proc/{p}/cmdline").read_bytes()[:90] for p in alive(children)
        ]
    finally:
        proc.kill()
        for pid in alive(children):
            os.kill(pid, signal.SIGKILL)
    resumed = _ok(_run(out, 3))
    assert "took over a stale lock" in resumed.stdout
    assert _iterations(out).keys() == {1, 2, 3}


def test_ctrl_c_checkpoints_the_iteration_and_exits_130_in_one_line(tmp_path):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        _cmd(out, 3, "run.save_every=0"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (out / "metrics.jsonl").is_file() or 1 not in _iterations(out):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    assert f"signal {int(signal.SIGINT)}: checkpoint" in stdout
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.count("interrupted: finishing the current step") == 1
    stopped_at = int((out / "checkpoints" / "latest").read_text().strip().split("-")[1])
    assert stopped_at in (1, 2)


def test_tiny_model_alone_runs_with_overrides_after_flags_and_no_progress_bars(tmp_path):
    out = tmp_path / "alone"
    cmd = [sys.executable, "-m", "nemo_rence", "train", "model=tiny", "--no-progress"]
    proc = subprocess.run(
        [*cmd, "run.iterations=1", f"run.out_dir={out}"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    _ok(proc)
    assert sorted(_iterations(out)) == [1]
    assert "Loading weights" not in proc.stderr + proc.stdout
    assert "Writing model shards" not in proc.stderr + proc.stdout


assert "model=tiny" in TINY  # the shared settings these tests build on
