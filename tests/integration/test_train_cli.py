"""The real entry point, ``nemo-rence train``, at toy budgets on a tiny model: run directory,
metrics, checkpoints, exact resume after SIGKILL, and a clean checkpointed exit on SIGUSR1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TINY = [
    "model=tiny",
    "filter.enabled=false",  # a random model never boxes an answer: keep every group
    "filter.batch_size=2",
    "optim.mini_batch_size=1",
    "optim.n_update=2",
    # a decaying schedule, so that the resume tests also check it continues where it stopped
    "optim.lr_schedule=linear",
    "optim.warmup_steps=1",
    "optim.min_lr_ratio=0.5",
    "rollout.group_size=4",
    "rollout.max_new_tokens=12",
    "data.max_prompt_tokens=512",
    "run.eval_size=4",
]


def _cmd(out: Path, iterations: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nemo_rence",
        "train",
        *TINY,
        f"run.out_dir={out}",
        f"run.iterations={iterations}",
        *extra,
        "--no-progress",
    ]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")


def _train(out: Path, iterations: int, *extra: str) -> str:
    proc = subprocess.run(
        _cmd(out, iterations, *extra), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def _iterations(out: Path) -> dict[int, dict]:
    """The last metrics line of each training iteration (eval lines excluded)."""
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss/total" in row:
            rows[row["iteration"]] = row
    return rows


def _deterministic(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(("time/", "refit/seconds"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    stdout = _train(out, 3)
    assert "held-out accuracy change: +0.0 points" in stdout  # a random model never boxes
    assert "best held-out accuracy: 0.0% at iteration 3 (+0.0 points; checkpoints/best" in stdout
    return out


def test_train_writes_config_metrics_tensorboard_and_checkpoints(reference):
    cfg = json.loads((reference / "config.json").read_text())
    assert cfg["loss"]["name"] == "rence" and cfg["run"]["iterations"] == 3
    rows = _iterations(reference)
    assert sorted(rows) == [1, 2, 3]
    for key in (
        "loss/total",
        "kl/coef",
        "filter/accept_rate",
        "filter/rollouts_per_accepted_prompt",
        "refit/logprob_gap",
        "refit/seconds",
        "reward/mean",
        "rollout/entropy",
        "time/rollout",
        "time/update",
    ):
        assert key in rows[1], key
    assert rows[3]["refit/logprob_gap"] < 1e-4  # the engine samples from the policy's weights
    # linear decay to 0.5 lr after 1 warm-up step over 3 x 2 steps: per step 1, 1, 7/8, 3/4,
    # 5/8, 1/2 of lr; logged as the mean of each iteration's two steps
    lr = cfg["optim"]["lr"]
    for it, fraction in ((1, 1.0), (2, 13 / 16), (3, 9 / 16)):
        assert rows[it]["optim/lr"] == pytest.approx(fraction * lr, rel=1e-12), it
    assert list((reference / "tb").glob("events.out.tfevents.*"))
    plots = {p.name for p in (reference / "plots").glob("*.png")}
    assert {"reward.png", "kl.png", "loss.png", "refit_gap.png", "rho_histogram.png"} <= plots
    ckpts = reference / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "iter-000003"
    assert sorted(p.name for p in ckpts.glob("iter-*")) == ["iter-000002", "iter-000003"]
    assert (ckpts / "iter-000003" / "trainer.pt").is_file()


def test_a_run_killed_with_sigkill_resumes_and_continues_exactly(reference, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(out, 3), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    while not (latest.is_file() and latest.read_text().strip() == "iter-000001"):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    _train(out, 3)  # resumes from the last complete checkpoint
    resumed, uninterrupted = _iterations(out), _iterations(reference)
    for it in (2, 3):
        assert _deterministic(resumed[it]) == _deterministic(uninterrupted[it])


def test_sigusr1_checkpoints_and_exits_cleanly_then_the_run_resumes(reference, tmp_path):
    out = tmp_path / "preempted"
    proc = subprocess.Popen(
        _cmd(out, 3, "run.save_every=0"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (out / "metrics.jsonl").is_file() or 1 not in _iterations(out):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "checkpoint" in stdout
    stopped_at = int((out / "checkpoints" / "latest").read_text().strip().split("-")[1])
    assert stopped_at in (1, 2)  # stopped after a finished iteration, before the last
    _train(out, 3)
    assert _deterministic(_iterations(out)[3]) == _deterministic(_iterations(reference)[3])


def test_sigusr1_during_a_long_batch_search_checkpoints_it_after_the_current_draw(tmp_path):
    """SLURM's grace period is short: a preempted run must not wait for a search to fill."""
    out = tmp_path / "preempted-search"
    proc = subprocess.Popen(
        _cmd(out, 3, "filter.enabled=true", "filter.max_draws=100000"),  # never fills
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (out / "metrics.jsonl").is_file():  # the evaluation before training is logged
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # inside the search
    proc.send_signal(signal.SIGUSR1)
    stdout, _ = proc.communicate(timeout=120)
    assert (
        proc.returncode == 0
        and f"signal {int(signal.SIGUSR1)}: the batch search stopped after" in stdout
    ), stdout
    state = torch.load(out / "checkpoints" / "iter-000000" / "trainer.pt", weights_only=True)
    assert state["trainer"]["filter"]["pending"]["stats"]["draws"] >= 1


def test_a_bad_override_fails_before_any_model_is_built(tmp_path):
    proc = subprocess.run(
        _cmd(tmp_path / "bad", 1, "filter.t_easy=1.5"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "filter.t_easy must be in [0, 1], got 1.5" in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_time_budget_stops_early_then_checkpoints_and_evaluates(tmp_path):
    """run.time_budget_min: the first iteration always runs, the next would not fit the budget."""
    out = tmp_path / "budget"
    stdout = _train(out, 50, "run.time_budget_min=0.001")
    assert "time budget: stopping after 1 iterations" in stdout
    assert "held-out accuracy change" in stdout
    assert sorted(_iterations(out)) == [1]
    assert (out / "checkpoints" / "latest").read_text().strip() == "iter-000001"


def test_time_budget_interrupts_a_long_batch_search_and_the_resumed_run_continues_it(tmp_path):
    """With the filter on, the random tiny model never solves a group: the search would run to
    filter.max_draws. The budget stops it after the first draw; the checkpoint keeps the search
    (its draws), the run still evaluates, and a rerun resumes the same search."""
    out = tmp_path / "search"
    extra = ("filter.enabled=true", "filter.max_draws=1000", "run.time_budget_min=0.001")

    def pending_draws() -> int:
        state = torch.load(out / "checkpoints" / "iter-000000" / "trainer.pt", weights_only=True)
        return state["trainer"]["filter"]["pending"]["stats"]["draws"]

    stdout = _train(out, 3, *extra)
    assert "time budget: the batch search stopped after 1 draws" in stdout, stdout
    assert "with 0 of 2 groups accepted" in stdout
    assert "held-out accuracy change" in stdout
    assert (out / "checkpoints" / "latest").read_text().strip() == "iter-000000"
    assert pending_draws() == 1 and _iterations(out) == {}
    stdout = _train(out, 3, *extra)
    assert "time budget: the batch search stopped after 2 draws" in stdout, stdout
    assert pending_draws() == 2


def test_tensor_parallel_run_with_sequence_parallel_and_engine_logprobs(tmp_path):
    """torchrun, TP=2 with sequence parallelism, pi_old from the engine (rank 0 only has one):
    every rank must still take part in the policy's refit-check forward."""
    out = tmp_path / "tp2"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={29500 + os.getpid() % 1000}",
        "-m",
        "nemo_rence",
        "train",
        *TINY,
        "policy.tensor_parallel=2",
        "policy.sequence_parallel=true",
        "rollout.reuse_logprobs=true",
        f"run.out_dir={out}",
        "run.iterations=2",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    rows = _iterations(out)
    assert sorted(rows) == [1, 2]
    for row in rows.values():
        assert row["score/reused_engine"] == 1.0
        assert row["refit/logprob_gap"] < 1e-4
