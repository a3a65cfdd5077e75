"""Checkpoints that heal and resume that refuses to guess (nemo_rence.run_state), on a fake
trainer whose policy writes two small files."""

from __future__ import annotations

import errno
import json
import os
from collections import namedtuple
from pathlib import Path

import pytest

from nemo_rence import run_state
from nemo_rence.run_state import (
    CheckpointError,
    CheckpointManager,
    ResumeError,
    RunLock,
    RunLockedError,
    compare_configs,
)

CONFIG = {"optim": {"lr": 1e-4}, "loss": {"name": "rence"}, "run": {"iterations": 3}}


class _Policy:
    def __init__(self) -> None:
        self.weights = "w0"
        self.loaded_from: Path | None = None

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        (directory / "weights.bin").write_text(self.weights * 1000)
        (directory / "optimizer.bin").write_text("adam" * 1000)

    def load(self, directory: Path) -> None:
        self.weights = (directory / "weights.bin").read_text()[:2]
        self.loaded_from = directory


class _Trainer:
    def __init__(self) -> None:
        self.iteration = 0
        self.policy = _Policy()
        self.loaded: dict | None = None

    def state_dict(self) -> dict:
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.loaded = state
        self.iteration = state["iteration"]


def _run(run_dir: Path, iterations: int, config=CONFIG, keep: int = 2) -> CheckpointManager:
    """A run that checkpoints iterations 1..iterations."""
    ckpt = CheckpointManager(run_dir / "checkpoints", keep=keep, config=config, log=lambda m: None)
    trainer = _Trainer()
    assert not ckpt.resume(trainer)
    for it in range(1, iterations + 1):
        trainer.iteration = it
        trainer.policy.weights = f"w{it}"
        (run_dir / "metrics.jsonl").open("a").write(
            json.dumps({"iteration": it, "loss/total": 0.1}) + "\n"
        )
        ckpt.save(trainer)
    return ckpt


def _resume(run_dir: Path, config=CONFIG, mode: str = "auto"):
    notes: list[str] = []
    ckpt = CheckpointManager(
        run_dir / "checkpoints", keep=2, config=config, resume=mode, log=notes.append
    )
    trainer = _Trainer()
    resumed = ckpt.resume(trainer)
    return resumed, trainer, "\n".join(notes), ckpt


def test_a_missing_latest_pointer_resumes_the_newest_complete_checkpoint_and_says_so(tmp_path):
    _run(tmp_path, 3)
    (tmp_path / "checkpoints" / "latest").unlink()
    resumed, trainer, notes, ckpt = _resume(tmp_path)
    assert resumed and trainer.iteration == 3 and trainer.policy.weights == "w3"
    assert "latest is missing: resuming from iter-000003" in notes
    assert (ckpt.root / "latest").read_text().strip() == "iter-000003"  # repaired


def test_auto_refuses_a_run_directory_it_cannot_resume_and_never_starts_over_aside(tmp_path):
    _run(tmp_path, 2)
    for path in (tmp_path / "checkpoints").glob("iter-*"):
        (path / "manifest.json").unlink()  # e.g. checkpoints of a run killed mid-write
    with pytest.raises(
        ResumeError, match=r"cannot be resumed .*no manifest.json.*run.resume=never"
    ):
        _resume(tmp_path)
    with pytest.raises(ResumeError, match=r"run.resume=must, but"):
        _resume(tmp_path, mode="must")
    resumed, trainer, notes, _ = _resume(tmp_path, mode="never")
    assert not resumed and trainer.iteration == 0
    assert "previous run's files moved to" in notes
    (previous,) = (tmp_path / "previous").iterdir()
    assert {p.name for p in previous.iterdir()} >= {"checkpoints", "metrics.jsonl", "config.json"}
    assert not (tmp_path / "metrics.jsonl").exists()


def test_auto_refuses_training_metrics_without_checkpoints_but_starts_an_empty_directory(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "loss/total": 0.5}) + "\n")
    with pytest.raises(ResumeError, match=r"1 training iterations in metrics.jsonl"):
        _resume(tmp_path)
    resumed, *_ = _resume(tmp_path / "fresh")
    assert not resumed and (tmp_path / "fresh" / "config.json").is_file()


def test_a_config_that_changes_the_run_is_refused_with_the_diff_and_nothing_is_written(tmp_path):
    _run(tmp_path, 2)
    before = (tmp_path / "config.json").read_text()
    history = (tmp_path / "config-history.jsonl").read_text()
    changed = {**CONFIG, "optim": {"lr": 2e-4}, "loss": {"name": "grpo"}}
    with pytest.raises(ResumeError) as err:
        _resume(tmp_path, config=changed)
    assert "optim.lr: 0.0001 -> 0.0002" in str(err.value)
    assert 'loss.name: "rence" -> "grpo"' in str(err.value)
    assert (tmp_path / "config.json").read_text() == before
    assert (tmp_path / "config-history.jsonl").read_text() == history


def test_allowed_changes_are_logged_and_every_start_is_kept_in_the_config_history(tmp_path):
    _run(tmp_path, 2)
    longer = {**CONFIG, "run": {"iterations": 5}}
    resumed, trainer, notes, _ = _resume(tmp_path, config=longer)
    assert resumed and trainer.iteration == 2
    assert "run.iterations: 3 -> 5" in notes
    assert json.loads((tmp_path / "config.json").read_text()) == CONFIG  # never overwritten
    starts = [json.loads(line) for line in (tmp_path / "config-history.jsonl").open()]
    assert [s["resumed_from"] for s in starts] == [None, "iter-000002"]
    assert starts[1]["changes"] == {"run.iterations": [3, 5]}
    stored = json.loads((tmp_path / "checkpoints" / "iter-000002" / "meta.json").read_text())
    assert stored["config"] == CONFIG


def test_compare_configs_splits_meaning_from_bookkeeping():
    refused, allowed = compare_configs(
        {"rollout": {"group_size": 8}, "run": {"eval_every": 1}, "tracking": {"tags": ["a"]}},
        {"rollout": {"group_size": 4}, "run": {"eval_every": 2}, "tracking": {"tags": ["b"]}},
    )
    assert refused == {"rollout.group_size": (8, 4)}
    assert allowed == {"run.eval_every": (1, 2), "tracking.tags": (["a"], ["b"])}


@pytest.mark.parametrize("broken", ["trainer.pt", "policy/weights.bin", "manifest.json"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one_naming_the_file(
    tmp_path, broken
):
    _run(tmp_path, 2)
    path = tmp_path / "checkpoints" / "iter-000002" / broken
    path.write_bytes(path.read_bytes()[:-7])  # truncated
    resumed, trainer, notes, _ = _resume(tmp_path)
    assert resumed and trainer.iteration == 1 and trainer.policy.weights == "w1"
    assert "skipping broken checkpoint" in notes and str(path) in notes
    assert "resuming from iter-000001" in notes


def test_a_flipped_byte_is_caught_by_the_checksum(tmp_path):
    _run(tmp_path, 2)
    path = tmp_path / "checkpoints" / "iter-000002" / "policy" / "weights.bin"
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))
    _resumed, trainer, notes, _ = _resume(tmp_path)
    assert trainer.iteration == 1 and "sha256 differs" in notes


def test_a_directory_with_a_trainer_pt_but_no_manifest_is_not_complete(tmp_path):
    _run(tmp_path, 1)
    fake = tmp_path / "checkpoints" / "iter-000005"
    fake.mkdir()
    (fake / "trainer.pt").write_bytes(b"x")
    _resumed, trainer, notes, _ = _resume(tmp_path)
    assert trainer.iteration == 1 and "iter-000005: no manifest.json" in notes


def test_rotation_never_deletes_the_last_verified_checkpoint(tmp_path, monkeypatch):
    ckpt = _run(tmp_path, 2, keep=1)
    real = run_state.verify_checkpoint

    def disk_lies(path: Path, checksums: bool = True):
        if path.name == "iter-000003" and checksums:
            return f"{path}/trainer.pt: its sha256 differs from the manifest's"
        return real(path, checksums)

    monkeypatch.setattr(run_state, "verify_checkpoint", disk_lies)
    trainer = _Trainer()
    trainer.iteration = 3
    ckpt.save(trainer)
    names = sorted(p.name for p in ckpt.root.glob("iter-*"))
    assert "iter-000002" in names  # not rotated away: the new one did not verify
    assert (ckpt.root / "latest").read_text().strip() == "iter-000002"


def test_too_little_free_space_refuses_before_writing_and_keeps_the_previous(tmp_path, monkeypatch):
    ckpt = _run(tmp_path, 1)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(run_state.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    trainer = _Trainer()
    trainer.iteration = 2
    with pytest.raises(
        CheckpointError, match=r"no space left on .*checkpoints: checkpoint needs \d+ MiB"
    ):
        ckpt.save(trainer)
    assert sorted(p.name for p in ckpt.root.iterdir()) == ["iter-000001", "latest"]
    assert run_state.verify_checkpoint(ckpt.root / "iter-000001") is None


def test_a_disk_that_fills_up_while_writing_says_so_and_keeps_the_previous(tmp_path):
    ckpt = _run(tmp_path, 1)
    trainer = _Trainer()
    trainer.iteration = 2

    def full(directory: Path) -> None:
        directory.mkdir(parents=True)
        (directory / "weights.bin").write_text("w" * 5000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    trainer.policy.save = full  # type: ignore[method-assign]
    with pytest.raises(CheckpointError, match=r"no space left on .*: checkpoint needs more than"):
        ckpt.save(trainer)
    assert sorted(p.name for p in ckpt.root.iterdir()) == ["iter-000001", "latest"]


def test_a_finished_run_is_recognised_before_anything_is_built(tmp_path):
    ckpt = _run(tmp_path, 3)
    trainer = _Trainer()
    trainer.iteration = 3
    ckpt.mark_finished(trainer, {"eval/accuracy": 0.5})
    again = CheckpointManager(tmp_path / "checkpoints", config=CONFIG, log=lambda m: None)
    assert again.finished(3)["metrics"] == {"eval/accuracy": 0.5}
    longer = CheckpointManager(tmp_path / "checkpoints", config=CONFIG, log=lambda m: None)
    assert longer.finished(5) is None  # more iterations asked: not finished


def test_a_run_lock_refuses_a_second_trainer_and_takes_over_a_stale_one(tmp_path):
    lock = RunLock(tmp_path).acquire()
    owner = json.loads(lock.path.read_text())
    owner["pid"] = os.getppid()  # a live process that is not us
    owner["start_time"] = run_state._process_start(os.getppid())
    lock.path.write_text(json.dumps(owner))
    with pytest.raises(RunLockedError, match=rf"in use by another trainer \(pid {os.getppid()}"):
        RunLock(tmp_path).acquire()
    owner["start_time"] = "1"  # the same pid, another process (pid reused): stale
    lock.path.write_text(json.dumps(owner))
    third = RunLock(tmp_path).acquire()
    assert third.note is not None and "stale lock" in third.note
    third.release()
    owner["pid"] = 2**22 + 12345  # no such process: a trainer killed with SIGKILL
    lock.path.write_text(json.dumps(owner))
    second = RunLock(tmp_path).acquire()
    assert second.note is not None and "stale lock" in second.note
    second.release()
    assert not lock.path.exists()
