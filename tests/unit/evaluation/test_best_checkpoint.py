"""The ``best`` checkpoint pointer: chosen by held-out accuracy, ties keep the earlier one, and
keep-N rotation never deletes it; :func:`select_best` rebuilds the choice from a run's history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nemo_rence.run_state import BEST_METRIC, CheckpointManager, read_best, select_best


class _Policy:
    def __init__(self) -> None:
        self.saves = 0

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        (directory / "weights.txt").write_text("w")
        self.saves += 1


class _Trainer:
    def __init__(self, policy: _Policy) -> None:
        self.iteration = 0
        self.policy = policy

    def state_dict(self) -> dict:
        return {"iteration": self.iteration}


def _setup(tmp_path: Path, keep: int = 1):
    policy = _Policy()
    return CheckpointManager(tmp_path / "checkpoints", keep=keep), _Trainer(policy), policy


def _on_disk(ckpt: CheckpointManager) -> list[str]:
    return sorted(p.name for p in ckpt.root.glob("iter-*"))


def _train_and_eval(ckpt, trainer, accuracies: dict[int, float]) -> None:
    """Iterations 1..N: save every iteration, then evaluate (as train.py does)."""
    for it in sorted(accuracies):
        trainer.iteration = it
        ckpt.update_best(trainer, {BEST_METRIC: accuracies[it]})
        ckpt.save(trainer)


def test_best_is_the_highest_accuracy_and_a_tie_keeps_the_earlier_checkpoint(tmp_path):
    ckpt, trainer, _ = _setup(tmp_path, keep=1)
    _train_and_eval(ckpt, trainer, {1: 0.25, 2: 0.5, 3: 0.5, 4: 0.25})
    best = ckpt.best()
    assert best is not None
    assert (best.checkpoint, best.iteration, best.value) == ("iter-000002", 2, 0.5)
    assert json.loads((ckpt.root / "best").read_text())["checkpoint"] == "iter-000002"


def test_rotation_never_deletes_the_best_checkpoint_and_drops_a_superseded_best(tmp_path):
    ckpt, trainer, _ = _setup(tmp_path, keep=1)
    _train_and_eval(ckpt, trainer, {1: 0.5, 2: 0.1, 3: 0.2})
    assert _on_disk(ckpt) == ["iter-000001", "iter-000003"]  # best + the newest `keep`
    _train_and_eval(ckpt, trainer, {4: 0.9, 5: 0.1})
    assert ckpt.best().checkpoint == "iter-000004"
    assert _on_disk(ckpt) == ["iter-000004", "iter-000005"]  # iter-1 is no longer protected
    assert ckpt.latest().name == "iter-000005"


def test_a_new_best_without_a_checkpoint_is_saved_once(tmp_path):
    ckpt, trainer, policy = _setup(tmp_path, keep=2)
    trainer.iteration = 3
    assert ckpt.update_best(trainer, {BEST_METRIC: 0.4})
    assert (ckpt.root / "iter-000003" / "trainer.pt").is_file()
    assert ckpt.best().checkpoint == "iter-000003"
    ckpt.save(trainer)  # the loop's save_every save at the same iteration
    assert policy.saves == 1


@pytest.mark.parametrize(
    "iteration, metrics",
    [(0, {BEST_METRIC: 1.0}), (2, {}), (2, {BEST_METRIC: float("nan")})],
    ids=["before-training", "no-metric", "nan"],
)
def test_evaluations_that_are_not_candidates_leave_best_unset(tmp_path, iteration, metrics):
    ckpt, trainer, policy = _setup(tmp_path)
    trainer.iteration = iteration
    assert not ckpt.update_best(trainer, metrics)
    assert ckpt.best() is None and policy.saves == 0


def _write_history(run_dir: Path, rows: list[dict]) -> None:
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_select_best_rebuilds_the_choice_from_the_history_of_checkpoints_on_disk(tmp_path):
    ckpt, trainer, _ = _setup(tmp_path, keep=10)
    for it in (2, 4, 6):
        trainer.iteration = it
        ckpt.save(trainer)
    _write_history(
        tmp_path,
        [
            {
                "iteration": 0,
                BEST_METRIC: 0.9,
                "eval/is_before": 1.0,
            },  # base model: not a candidate
            {"iteration": 1, "loss/total": 0.3},
            {"iteration": 2, BEST_METRIC: 0.5, "eval/is_periodic": 1.0},
            {"iteration": 3, BEST_METRIC: 0.8, "eval/is_periodic": 1.0},  # no checkpoint on disk
            {"iteration": 4, BEST_METRIC: 0.6, "eval/is_periodic": 1.0},
            {"iteration": 6, BEST_METRIC: 0.6, "eval/is_after": 1.0},  # tie: the earlier wins
        ],
    )
    best = select_best(tmp_path)
    assert (best.checkpoint, best.value, best.source) == ("iter-000004", 0.6, "history")
    assert [c["iteration"] for c in best.candidates] == [2, 3, 4, 6]
    assert [c["available"] for c in best.candidates] == [True, False, True, True]


def test_select_best_prefers_the_pointer_and_fails_clearly_without_any_evaluation(tmp_path):
    ckpt, trainer, _ = _setup(tmp_path, keep=10)
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        select_best(tmp_path)
    trainer.iteration = 1
    ckpt.update_best(trainer, {BEST_METRIC: 0.1})
    _write_history(tmp_path, [{"iteration": 1, BEST_METRIC: 0.7}])
    best = select_best(tmp_path)
    assert (best.checkpoint, best.value, best.source) == ("iter-000001", 0.1, "pointer")
    assert read_best(ckpt.root) == best


def test_a_forced_save_rewrites_the_iteration_and_a_plain_one_does_not(tmp_path):
    """An interrupted batch search changes the loop state without a new iteration: force."""
    ckpt, trainer, policy = _setup(tmp_path, keep=2)
    trainer.iteration = 3
    path = ckpt.save(trainer)
    trainer.state_dict = lambda: {"iteration": 3, "search": "kept groups"}  # type: ignore
    assert ckpt.save(trainer) == path and policy.saves == 1
    assert ckpt.save(trainer, force=True) == path and policy.saves == 2
    assert torch.load(path / "trainer.pt")["trainer"]["search"] == "kept groups"
    assert sorted(p.name for p in ckpt.root.iterdir()) == ["iter-000003", "latest"]


def test_latest_recovers_a_rewrite_killed_between_its_two_renames(tmp_path):
    ckpt, trainer, _ = _setup(tmp_path)
    trainer.iteration = 1
    path = ckpt.save(trainer)
    path.rename(ckpt.root / ".old-iter-000001")  # the first rename done, the second not
    assert ckpt.latest() == path and (path / "trainer.pt").is_file()
    path.rename(ckpt.root / "elsewhere")
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.latest()
