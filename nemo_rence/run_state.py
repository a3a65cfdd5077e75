"""Atomic checkpoints of a whole run, resume, and the best checkpoint by held-out accuracy.

Layout under ``<run_dir>/checkpoints``::

    iter-000004/policy/        the policy's own checkpoint (model + optimizer; Policy.save)
    iter-000004/trainer.pt     loop state (``Trainer.state_dict``): iteration, filter (cache Q,
                               mastered set), KL coefficient, RNG states, prompt-source position,
                               evaluation history
    iter-000004/meta.json      {"iteration": 4}
    latest                     text file naming the last COMPLETE checkpoint, written last
    best                       JSON naming the checkpoint with the best held-out accuracy:
                               {"checkpoint": "iter-000002", "iteration": 2,
                                "metric": "eval/accuracy", "value": 0.75}

A checkpoint is written to ``.tmp-iter-NNNNNN`` and renamed when complete; ``latest`` is replaced
atomically afterwards. A run killed at any moment (SIGKILL included) therefore resumes from the
last complete checkpoint; partial ``.tmp-*`` directories are ignored and cleaned up. Everything in
``trainer.pt`` is plain containers and tensors, loaded with ``torch.load(weights_only=True)``.

Best checkpoint (the paper reports "the checkpoint with the best average validation
performance"): after each periodic and final held-out evaluation the loop calls
:meth:`CheckpointManager.update_best`. A strictly higher ``eval/accuracy`` than the recorded best
moves the ``best`` pointer (saving the evaluated iteration first when it has no checkpoint yet);
a TIE KEEPS THE EARLIER checkpoint (less training for the same score; the convention of
Hugging Face's ``load_best_model_at_end``). The evaluation before training is not a candidate
(the base model is not a run checkpoint). Keep-N rotation never deletes the checkpoint ``best``
names. For runs without a ``best`` pointer, :func:`select_best` rebuilds the choice from
``metrics.jsonl`` with the same rule.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from nemo_rence.infra.distributed import barrier, broadcast_object, rank

__all__ = [
    "BEST_METRIC",
    "BestChoice",
    "CheckpointManager",
    "Checkpointable",
    "read_best",
    "select_best",
]

BEST_METRIC = "eval/accuracy"
"""The held-out metric the best checkpoint maximises (greedy boxed-and-correct accuracy)."""


class Checkpointable(Protocol):
    """What a checkpoint holds: the policy (saved by itself) and the loop's plain state."""

    iteration: int

    @property
    def policy(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _complete(path: Path) -> bool:
    return (path / "trainer.pt").is_file()


@dataclass(frozen=True)
class BestChoice:
    """The best checkpoint of a run and how it was chosen.

    Attributes:
        checkpoint: the checkpoint directory name (``iter-NNNNNN``).
        iteration: its training iteration.
        value: its ``metric`` value.
        metric: the maximised held-out metric (:data:`BEST_METRIC`).
        source: "pointer" (the ``best`` file the trainer wrote) or "history" (rebuilt from
            ``metrics.jsonl``).
        candidates: for "history": every evaluated iteration with its value and whether its
            checkpoint is still on disk.
    """

    checkpoint: str
    iteration: int
    value: float
    metric: str = BEST_METRIC
    source: str = "pointer"
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "iteration": self.iteration,
            "metric": self.metric,
            "value": self.value,
            "source": self.source,
            "rule": "highest value; a tie keeps the earlier checkpoint",
            "candidates": self.candidates,
        }


def read_best(root: str | Path) -> BestChoice | None:
    """The ``best`` pointer under a checkpoints directory, or None when there is none."""
    pointer = Path(root) / "best"
    if not pointer.is_file():
        return None
    data = json.loads(pointer.read_text())
    return BestChoice(
        checkpoint=str(data["checkpoint"]),
        iteration=int(data["iteration"]),
        value=float(data["value"]),
        metric=str(data.get("metric", BEST_METRIC)),
    )


def select_best(run_dir: str | Path) -> BestChoice:
    """The best checkpoint of a run directory: its ``best`` pointer, else its eval history.

    The history is ``metrics.jsonl``'s rows holding :data:`BEST_METRIC` (periodic and final
    evaluations; the one before training is excluded); only iterations whose checkpoint is
    still complete on disk are candidates. Highest value wins, a tie keeps the earlier one.

    Raises:
        FileNotFoundError: the run has no usable pointer and no evaluated checkpoint on disk.
    """
    run_dir = Path(run_dir)
    root = run_dir / "checkpoints"
    best = read_best(root)
    if best is not None and _complete(root / best.checkpoint):
        return best
    values: dict[int, float] = {}
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            value = row.get(BEST_METRIC)
            it = int(row.get("iteration", 0))
            if value is None or it < 1 or row.get("eval/is_before"):
                continue
            values[it] = float(value)  # the last evaluation of an iteration counts
    candidates = [
        {"iteration": it, "value": v, "available": _complete(root / f"iter-{it:06d}")}
        for it, v in sorted(values.items())
    ]
    chosen: dict[str, Any] | None = None
    for c in candidates:
        if c["available"] and (chosen is None or c["value"] > chosen["value"]):
            chosen = c
    if chosen is None:
        raise FileNotFoundError(
            f"{run_dir}: no best checkpoint: no 'best' pointer in {root} and no evaluated "
            f"iteration ({BEST_METRIC} in metrics.jsonl) whose checkpoint is on disk"
        )
    return BestChoice(
        checkpoint=f"iter-{chosen['iteration']:06d}",
        iteration=int(chosen["iteration"]),
        value=float(chosen["value"]),
        source="history",
        candidates=candidates,
    )


class CheckpointManager:
    """Saves and restores (policy, loop state) atomically under ``root``; tracks the best one."""

    def __init__(self, root: str | Path, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = keep
        self._saved_iteration: int | None = None

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` names (collective), or None before the first save."""
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        aside = self.root / f".old-{path.name}"
        if rank() == 0 and not _complete(path) and _complete(aside):
            shutil.rmtree(path, ignore_errors=True)  # killed between the two renames of save()
            os.rename(aside, path)
        barrier()  # (collective: every rank calls latest())
        if not _complete(path):
            raise FileNotFoundError(f"{pointer} names {path}, which is not a complete checkpoint")
        return path

    def best(self) -> BestChoice | None:
        """The recorded best checkpoint (see the module docstring), or None."""
        return read_best(self.root)

    def save(self, trainer: Checkpointable, force: bool = False) -> Path:
        """Write a checkpoint of the current iteration (collective).

        A second call at the same iteration in the same process returns the checkpoint already
        written, unless ``force``: the loop state changes between iterations only when a batch
        search is interrupted (its groups are kept), and ``update_best`` may save the iteration
        just before the ``save_every`` save does. A checkpoint that is rewritten is replaced by
        two renames (the old one is set aside as ``.old-iter-N`` first, and deleted last), so a
        complete one exists at every moment (:meth:`latest` falls back to the set-aside one).
        """
        name = f"iter-{trainer.iteration:06d}"
        final, tmp = self.root / name, self.root / f".tmp-{name}"
        old = self.root / f".old-{name}"
        if not force and self._saved_iteration == trainer.iteration and _complete(final):
            return final
        if rank() == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        barrier()
        trainer.policy.save(tmp / "policy")
        if rank() == 0:
            torch.save({"trainer": trainer.state_dict()}, tmp / "trainer.pt")
            (tmp / "meta.json").write_text(json.dumps({"iteration": trainer.iteration}))
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.rename(final, old)
            os.rename(tmp, final)
            _write_atomic(self.root / "latest", name + "\n")
            shutil.rmtree(old, ignore_errors=True)
            for stale in self.root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            self._rotate()
        barrier()
        self._saved_iteration = trainer.iteration
        return final

    def _rotate(self) -> None:
        """Delete all but the newest ``keep`` checkpoints, never the one ``best`` names."""
        best = self.best()
        for old in sorted(self.root.glob("iter-*"))[: -self.keep]:
            if best is None or old.name != best.checkpoint:
                shutil.rmtree(old, ignore_errors=True)

    def update_best(self, trainer: Checkpointable, metrics: Mapping[str, float]) -> bool:
        """Record an evaluation of the current iteration; move ``best`` if it is strictly better.

        Collective: call on every rank (``metrics`` may be empty on ranks other than 0; rank 0's
        decision is broadcast). Saves the iteration first when it has no checkpoint yet, so the
        pointer always names a complete checkpoint. Returns whether ``best`` moved.
        """
        decision = None
        if rank() == 0:
            value = metrics.get(BEST_METRIC)
            current = self.best()
            if (
                trainer.iteration >= 1
                and value is not None
                and math.isfinite(value)
                and (current is None or value > current.value)
            ):
                decision = float(value)
        decision = broadcast_object(decision)
        if decision is None:
            return False
        name = f"iter-{trainer.iteration:06d}"
        if not _complete(self.root / name):
            self.save(trainer)
        if rank() == 0:
            record = {
                "checkpoint": name,
                "iteration": trainer.iteration,
                "metric": BEST_METRIC,
                "value": decision,
            }
            _write_atomic(self.root / "best", json.dumps(record) + "\n")
            self._rotate()  # the previous best is an ordinary checkpoint again
        barrier()
        return True

    def resume(self, trainer: Checkpointable) -> bool:
        """Restore the latest complete checkpoint, if any; return whether one was restored."""
        path = self.latest()
        if path is None:
            return False
        trainer.policy.load(path / "policy")
        state = torch.load(path / "trainer.pt", weights_only=True)
        trainer.load_state_dict(state["trainer"])
        return True
