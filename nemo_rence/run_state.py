"""Atomic, verified checkpoints of a whole run; resume that refuses to guess; the best checkpoint.

Layout of a run directory (``run.out_dir``)::

    config.json                the config the run was started with (written once, never rewritten)
    config-history.jsonl       one line per start: time, checkpoint resumed from, allowed changes
    trainer.lock               pid and host of the trainer using the directory (:class:`RunLock`)
    checkpoints/iter-000004/policy/      the policy's own checkpoint (model + optimizer)
    checkpoints/iter-000004/trainer.pt   loop state (Trainer.state_dict: iteration, filter, KL,
                                         RNG states, sampler position, evaluation history)
    checkpoints/iter-000004/meta.json    {"iteration": 4, "config": {...}}
    checkpoints/iter-000004/manifest.json  every file with its size and sha256, written LAST
    checkpoints/latest         text file naming the last checkpoint written (informational)
    checkpoints/best           JSON naming the checkpoint with the best held-out accuracy
    checkpoints/finished       JSON written after the final evaluation of a finished run
    previous/<UTC time>/       what ``run.resume=never`` set aside (checkpoints, metrics, config)

Writing: a checkpoint goes to ``.tmp-iter-NNNNNN`` and is renamed when its manifest is written,
after a free-space check (the previous checkpoint's size). A killed write (SIGKILL included) leaves
only a ``.tmp-*`` directory, ignored and cleaned up. The renamed checkpoint is verified (sizes and
checksums re-read) before ``latest`` moves and before keep-N rotation deletes anything, so the
last verified checkpoint is never rotated away.

Resuming (:meth:`CheckpointManager.prepare`, before anything heavy is built): the newest
checkpoint whose manifest verifies is chosen, whatever ``latest`` says (a missing or stale
pointer is repaired, and the run says so); a broken one is skipped with a warning naming the
broken file. Its stored config is compared with the new one: fields that change what the run
computes refuse with the diff, the fields in :data:`MAY_CHANGE` are allowed and logged.
``run.resume``: ``auto`` resumes when it can, starts fresh in a directory without any run in it,
and refuses a directory holding a run it cannot resume; ``must`` refuses unless it resumes;
``never`` starts over, setting the previous run's files aside under ``previous/``.

Best checkpoint (the paper reports "the checkpoint with the best average validation
performance"): after each periodic and final held-out evaluation the loop calls
:meth:`CheckpointManager.update_best`. A strictly higher ``eval/accuracy`` than the recorded best
(or ``eval/avg`` when the run evaluates ``eval.benchmarks``) moves the ``best`` pointer (saving the evaluated iteration first when it has no checkpoint yet);
a TIE KEEPS THE EARLIER checkpoint (less training for the same score; the convention of
Hugging Face's ``load_best_model_at_end``). The evaluation before training is not a candidate
(the base model is not a run checkpoint). Keep-N rotation never deletes the checkpoint ``best``
names. For runs without a ``best`` pointer, :func:`select_best` rebuilds the choice from
``metrics.jsonl`` with the same rule.
"""

from __future__ import annotations

import atexit
import datetime
import errno
import hashlib
import json
import math
import os
import shutil
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from nemo_rence.infra.distributed import barrier, broadcast_object
from nemo_rence.signals import own_megatron_writer_queue, process_alive

__all__ = [
    "BEST_METRIC",
    "MAY_CHANGE",
    "RESUME_MODES",
    "BestChoice",
    "CheckpointError",
    "CheckpointManager",
    "Checkpointable",
    "ResumeError",
    "RunLock",
    "RunLockedError",
    "compare_configs",
    "read_best",
    "select_best",
    "verify_checkpoint",
]

BEST_METRIC = "eval/accuracy"
"""The held-out metric the best checkpoint maximises (greedy boxed-and-correct accuracy)."""

RESUME_MODES = ("auto", "must", "never")
"""``run.resume``: resume when possible / only resume / always start over (see the docstring)."""

MAY_CHANGE: tuple[str, ...] = (
    "run.iterations",
    "run.eval_every",
    "run.save_every",
    "run.keep_checkpoints",
    "run.eval_size",
    "run.threads",
    "run.max_refit_gap",
    "run.malloc_mmap_threshold_mb",
    "run.time_budget_min",
    "run.budget_amount",
    "run.out_dir",
    "run.resume",
    "tracking",
    "eval.every",
    "eval.batch_size",
    "policy.recompute",
    "policy.layout",
)
"""Config fields (and sections) a resumed run may change: the run's length, its evaluation and
checkpoint cadence, its budget, threads, trackers, and choices whose results agree up to fp32
rounding. Every other field refuses a resume when it differs (the algorithm and its loss, group
size, learning rate and schedule, model, data, seeds, parallel layout...)."""

MANIFEST = "manifest.json"
_MIB = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the path."""


class ResumeError(CheckpointError):
    """The run directory cannot be resumed as asked; the message says why and what to do."""


class RunLockedError(CheckpointError):
    """Another trainer holds the run directory."""


class _Saveable(Protocol):
    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...


class Checkpointable(Protocol):
    """What :class:`CheckpointManager` saves and restores (``nemo_rence.loop.Trainer``)."""

    iteration: int

    @property
    def policy(self) -> Any:
        """An object with ``save(directory)`` / ``load(directory)`` (collective)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The loop state as plain containers and tensors (``torch.load(weights_only=True)``)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _rank() -> int:
    """The global rank: torch.distributed's, or torchrun's ``RANK`` before it is initialised."""
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sha256(path: Path, fsync: bool = False) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        if fsync:
            os.fsync(f.fileno())
        for chunk in iter(lambda: f.read(_MIB), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path) -> int:
    """Write ``manifest.json`` (every file's size and sha256, flushed to disk first); its bytes."""
    files = {
        str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": _sha256(p, True)}
        for p in _files(directory)
    }
    total = sum(int(f["size"]) for f in files.values())  # type: ignore[call-overload]
    _write_atomic(directory / MANIFEST, json.dumps({"format": 1, "bytes": total, "files": files}))
    return total


def verify_checkpoint(directory: Path, checksums: bool = True) -> str | None:
    """None when ``directory`` is a complete checkpoint, else what is wrong, naming the file.

    Complete: its manifest is readable and every file in it exists with the recorded size (and,
    with ``checksums``, the recorded sha256).
    """
    manifest = directory / MANIFEST
    if not manifest.is_file():
        if not directory.is_dir():
            return f"{directory}: missing"
        return f"{directory}: no {MANIFEST} (written last: an incomplete checkpoint)"
    try:
        files = json.loads(manifest.read_text())["files"]
        entries = [(str(k), int(v["size"]), str(v["sha256"])) for k, v in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{manifest}: unreadable ({err})"
    for rel, size, digest in entries:
        path = directory / rel
        if not path.is_file():
            return f"{path}: missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{path}: {actual} bytes, the manifest says {size}"
        if checksums and _sha256(path) != digest:
            return f"{path}: its sha256 differs from the manifest's"
    return None


def _complete(path: Path) -> bool:
    """A cheap completeness test (manifest and file sizes; no checksums)."""
    return verify_checkpoint(path, checksums=False) is None


def _manifest_bytes(path: Path) -> int:
    try:
        return int(json.loads((path / MANIFEST).read_text())["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _iteration_of(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, Mapping):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _may_change(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in MAY_CHANGE)


def compare_configs(
    saved: Mapping[str, Any], current: Mapping[str, Any]
) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """(refused, allowed): the fields that differ, ``key -> (saved, current)``.

    ``allowed`` holds the differing fields in :data:`MAY_CHANGE`, ``refused`` all others. A field
    present on one side only (a field added or removed by a newer nemo-rence) is not compared.
    """
    old = dict(_flatten(json.loads(json.dumps(saved))))
    new = dict(_flatten(json.loads(json.dumps(current))))
    refused: dict[str, tuple[Any, Any]] = {}
    allowed: dict[str, tuple[Any, Any]] = {}
    for key in sorted(old.keys() & new.keys()):
        if old[key] != new[key]:
            (allowed if _may_change(key) else refused)[key] = (old[key], new[key])
    return refused, allowed


def _diff_lines(diff: Mapping[str, tuple[Any, Any]]) -> str:
    return "\n".join(f"  {k}: {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in diff.items())


def _training_rows(run_dir: Path) -> int:
    """Training iterations logged in ``metrics.jsonl`` (rows with a loss)."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    with metrics.open() as f:
        return sum('"loss/total"' in line for line in f)


def _enospc(err: BaseException) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
    """Saves, verifies and restores (policy, loop state) under ``root``; tracks the best one.

    Args:
        root: the checkpoints directory (``<run_dir>/checkpoints``).
        keep: complete checkpoints kept on disk (plus the one ``best`` names).
        config: the run's config as plain containers (``TrainConfig.to_dict()``): stored in
            every checkpoint, compared on resume, appended to ``config-history.jsonl``.
        resume: ``run.resume``, one of :data:`RESUME_MODES`.
        log: where notes go (repaired pointers, skipped checkpoints, allowed config changes).
        best_metric: the evaluation metric ``best`` maximises: ``eval/accuracy`` (held-out) or
            ``eval/avg`` (the mean avg@k of ``eval.benchmarks``, as the paper selects).
    """

    def __init__(
        self,
        root: str | Path,
        keep: int = 2,
        config: Mapping[str, Any] | None = None,
        resume: str = "auto",
        log: Callable[[str], None] | None = None,
        best_metric: str = BEST_METRIC,
    ) -> None:
        if resume not in RESUME_MODES:
            raise ValueError(f"run.resume must be one of {list(RESUME_MODES)}, got {resume!r}")
        self.root = Path(root)
        self.run_dir = self.root.parent
        self.keep = keep
        self.config = json.loads(json.dumps(config)) if config is not None else None
        self.resume_mode = resume
        self.best_metric = best_metric
        self.log = log or (lambda msg: print(msg, flush=True))
        self._saved_iteration: int | None = None
        self._prepared = False
        self._chosen: Path | None = None

    # -- reading -----------------------------------------------------------------------------
    def _candidates(self) -> list[Path]:
        """Checkpoint directories, newest first (``iter-N`` before a set-aside ``.old-iter-N``)."""
        found = [*self.root.glob("iter-*"), *self.root.glob(".old-iter-*")]
        return sorted(found, key=lambda p: (_iteration_of(p), not p.name.startswith(".")))[::-1]

    def _pointer(self) -> str | None:
        pointer = self.root / "latest"
        return pointer.read_text().strip() if pointer.is_file() else None

    def latest(self) -> Path | None:
        """The newest complete checkpoint (cheap check: manifest and sizes), or None."""
        for path in self._candidates():
            if not path.name.startswith(".") and _complete(path):
                return path
        return None

    def best(self) -> BestChoice | None:
        """The recorded best checkpoint (see the module docstring), or None."""
        return read_best(self.root)

    # -- resuming ----------------------------------------------------------------------------
    def prepare(self) -> Path | None:
        """Decide how the run starts; call it before anything heavy is built (rank 0 decides).

        Chooses the newest verified checkpoint, repairs ``latest``, checks the config against
        the checkpoint's, sets a previous run aside (``run.resume=never``) and records the
        config (``config.json`` once, ``config-history.jsonl`` always): nothing in the run
        directory changes unless every check passed. Idempotent; a no-op on other ranks.

        Returns:
            the checkpoint to resume (rank 0), or None (start from scratch; other ranks).

        Raises:
            ResumeError: the directory cannot be resumed as ``run.resume`` asks, or the config
                changes fields that are not in :data:`MAY_CHANGE` (the message lists them).
        """
        if self._prepared or _rank() != 0:
            return self._chosen
        notes: list[str] = []
        changes: dict[str, tuple[Any, Any]] = {}
        if self.resume_mode == "never":
            chosen = None
            self._set_aside(notes)
        else:
            chosen = self._choose(notes)
            if chosen is not None:
                changes = self._check_config(chosen)
                if chosen.name.startswith("."):  # killed between the two renames of a rewrite
                    final = self.root / chosen.name[len(".old-") :]
                    shutil.rmtree(final, ignore_errors=True)
                    os.rename(chosen, final)
                    chosen = final
                if self._pointer() != chosen.name:
                    _write_atomic(self.root / "latest", chosen.name + "\n")
        self._record_config(chosen, changes)
        for note in notes:
            self.log(note)
        self._chosen, self._prepared = chosen, True
        return chosen

    def _choose(self, notes: list[str]) -> Path | None:
        broken: list[str] = []
        chosen = None
        for path in self._candidates():
            problem = verify_checkpoint(path)
            if problem is None:
                chosen = path
                break
            if not (path.name.startswith(".") and (self.root / path.name[5:]).is_dir()):
                broken.append(problem)
        if chosen is None:
            trained = _training_rows(self.run_dir)
            if self.resume_mode == "must":
                why = "; ".join(broken) or "no checkpoint at all"
                raise ResumeError(
                    f"run.resume=must, but {self.root} holds no complete checkpoint ({why}); "
                    "allowed: run.resume=auto|must|never"
                )
            if broken or trained:
                found = "; ".join(broken) or f"{trained} training iterations in metrics.jsonl"
                raise ResumeError(
                    f"{self.run_dir} holds a run that cannot be resumed ({found}): starting "
                    "from scratch would mix two runs. Set run.resume=never to start over (its "
                    "files move to previous/), or choose another run.out_dir; allowed: "
                    "run.resume=auto|must|never"
                )
            return None
        name = chosen.name.removeprefix(".old-")
        if broken:
            notes.append(
                f"warning: skipping broken checkpoint(s): {'; '.join(broken)}; resuming from "
                f"{name}, the newest complete checkpoint"
            )
        pointer = self._pointer()
        if pointer is None:
            notes.append(
                f"{self.root / 'latest'} is missing: resuming from {name}, the newest complete "
                "checkpoint (pointer rewritten)"
            )
        elif pointer != name and not broken:
            notes.append(f"{self.root / 'latest'} names {pointer}: resuming from {name}")
        notes.append(f"resuming from {self.root / name}")
        return chosen

    def _check_config(self, chosen: Path) -> dict[str, tuple[Any, Any]]:
        if self.config is None:
            return {}
        saved = json.loads((chosen / "meta.json").read_text()).get("config")
        if saved is None:
            return {}
        refused, allowed = compare_configs(saved, self.config)
        if refused:
            raise ResumeError(
                f"cannot resume {self.run_dir} from {chosen.name.removeprefix('.old-')}: the "
                f"config changes what the run computes:\n{_diff_lines(refused)}\nfields that "
                f"may change on resume: {', '.join(MAY_CHANGE)}; to run another config, choose "
                "another run.out_dir (or run.resume=never to start over here)"
            )
        if allowed:
            self.log(f"config changes on resume (allowed):\n{_diff_lines(allowed)}")
        return allowed

    def _set_aside(self, notes: list[str]) -> None:
        """``run.resume=never``: move the previous run's files to ``previous/<UTC time>/``."""
        names = ("checkpoints", "metrics.jsonl", "tb", "samples", "plots", "config.json")
        present = [n for n in (*names, "config-history.jsonl") if (self.run_dir / n).exists()]
        if not present or (present == ["checkpoints"] and not any(self.root.iterdir())):
            return
        dest = self.run_dir / "previous" / _now().replace(":", "")
        dest.mkdir(parents=True, exist_ok=True)
        for n in present:
            os.rename(self.run_dir / n, dest / n)
        notes.append(f"run.resume=never: starting over; the previous run's files moved to {dest}")

    def _record_config(self, chosen: Path | None, changes: Mapping[str, tuple[Any, Any]]) -> None:
        if self.config is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        first = self.run_dir / "config.json"
        if not first.exists():
            _write_atomic(first, json.dumps(self.config, indent=2))
        record = {
            "started": _now(),
            "resumed_from": None if chosen is None else chosen.name,
            "changes": {k: list(v) for k, v in changes.items()},
            "config": self.config,
        }
        with (self.run_dir / "config-history.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

    def resume(self, trainer: Checkpointable) -> bool:
        """Restore the checkpoint :meth:`prepare` chose (collective); whether one was restored."""
        decision: tuple[str, str | None] = ("ok", None)
        if _rank() == 0:
            try:
                chosen = self.prepare()
                decision = ("ok", None if chosen is None else chosen.name)
            except ResumeError as err:
                decision = ("error", str(err))
        kind, value = broadcast_object(decision)
        if kind == "error":
            raise ResumeError(value)
        if value is None:
            return False
        path = self.root / value
        try:
            trainer.policy.load(path / "policy")
            state = torch.load(path / "trainer.pt", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"{path}: cannot load the checkpoint: {err}") from err
        trainer.load_state_dict(state["trainer"])
        self._saved_iteration = trainer.iteration
        return True

    def finished(self, iterations: int) -> dict[str, Any] | None:
        """The ``finished`` record when the run to resume is already done, else None.

        Done: the chosen checkpoint's iteration is ``>= iterations`` and the final evaluation of
        that iteration was recorded (:meth:`mark_finished`). Call after :meth:`prepare`, before
        building anything: a rerun of a finished run has nothing to do (raise ``run.iterations``
        to train further).
        """
        if self.resume_mode == "never":
            return None
        # rank 0's choice; the other ranks read the same directory (they must all stop here)
        chosen = self.prepare() if _rank() == 0 else self.latest()
        record_file = self.root / "finished"
        if chosen is None or not record_file.is_file():
            return None
        record = json.loads(record_file.read_text())
        iteration = _iteration_of(chosen)
        if iteration >= iterations and int(record.get("iteration", -1)) == iteration:
            return dict(record)
        return None

    def mark_finished(self, trainer: Checkpointable, metrics: Mapping[str, float]) -> None:
        """Record that the run ended at ``trainer.iteration`` with these final evaluation metrics."""
        if _rank() == 0:
            record = {"iteration": trainer.iteration, "finished": _now(), "metrics": dict(metrics)}
            _write_atomic(self.root / "finished", json.dumps(record) + "\n")

    # -- writing -----------------------------------------------------------------------------
    def _space_problem(self) -> str | None:
        """Why the next checkpoint would not fit (the newest complete one's size), or None."""
        previous = next((p for p in self._candidates() if _complete(p)), None)
        if previous is None:
            return None
        needed = _manifest_bytes(previous) + _MIB
        free = shutil.disk_usage(self.root).free
        if free >= needed:
            return None
        kept = self.latest()
        return (
            f"no space left on {self.root}: checkpoint needs {needed // _MIB + 1} MiB, "
            f"{free // _MIB} MiB free; the previous checkpoint "
            f"{kept.name if kept else previous.name} is intact"
        )

    def save(self, trainer: Checkpointable, force: bool = False) -> Path:
        """Write a verified checkpoint of the current iteration (collective).

        A second call at the same iteration in the same process returns the checkpoint already
        written, unless ``force``: the loop state changes between iterations only when a batch
        search is interrupted (its groups are kept), and ``update_best`` may save the iteration
        just before the ``save_every`` save does. A checkpoint that is rewritten is replaced by
        two renames (the old one is set aside as ``.old-iter-N`` first, and deleted last), so a
        complete one exists at every moment (:meth:`prepare` falls back to the set-aside one).

        Raises:
            CheckpointError: not enough free space (checked first: "no space left on <path>:
                checkpoint needs N MiB"), or the disk filled up while writing; the previous
                checkpoint is left intact either way.
        """
        name = f"iter-{trainer.iteration:06d}"
        final, tmp = self.root / name, self.root / f".tmp-{name}"
        old = self.root / f".old-{name}"
        if not force and self._saved_iteration == trainer.iteration and _complete(final):
            return final
        problem = None
        if _rank() == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            problem = self._space_problem()
            if problem is None:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
        problem = broadcast_object(problem)
        if problem is not None:
            raise CheckpointError(problem)
        own_megatron_writer_queue()  # its writer process must die with the trainer
        try:
            trainer.policy.save(tmp / "policy")
            if _rank() == 0:
                torch.save({"trainer": trainer.state_dict()}, tmp / "trainer.pt")
                meta = {"iteration": trainer.iteration, "saved": _now(), "config": self.config}
                (tmp / "meta.json").write_text(json.dumps(meta))
                write_manifest(tmp)
        except Exception as err:
            if not _enospc(err):
                raise
            written = sum(p.stat().st_size for p in _files(tmp)) if tmp.is_dir() else 0
            shutil.rmtree(tmp, ignore_errors=True)
            kept = self.latest()
            raise CheckpointError(
                f"no space left on {self.root}: checkpoint needs more than "
                f"{written // _MIB + 1} MiB (the disk filled up while writing it); the previous "
                f"checkpoint {kept.name if kept else '(none)'} is intact"
            ) from err
        barrier()
        if _rank() == 0:
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.rename(final, old)
            os.rename(tmp, final)
            problem = verify_checkpoint(final)  # re-read: the disk holds what was written
            if problem is not None:
                self.log(
                    f"warning: the checkpoint just written is broken ({problem}); "
                    "older checkpoints are kept"
                )
            else:
                _write_atomic(self.root / "latest", name + "\n")
                shutil.rmtree(old, ignore_errors=True)
                for stale in self.root.glob(".tmp-*"):
                    shutil.rmtree(stale, ignore_errors=True)
                self._rotate()
        barrier()
        self._saved_iteration = trainer.iteration
        return final

    def _rotate(self) -> None:
        """Keep the newest ``keep`` complete checkpoints and the one ``best`` names."""
        complete = [p for p in self._candidates() if not p.name.startswith(".") and _complete(p)]
        if not complete:
            return
        kept = {p.name for p in complete[: self.keep]}
        best = self.best()
        if best is not None:
            kept.add(best.checkpoint)
        for path in self.root.glob("iter-*"):
            if path.name not in kept:
                shutil.rmtree(path, ignore_errors=True)

    def update_best(self, trainer: Checkpointable, metrics: Mapping[str, float]) -> bool:
        """Record an evaluation of the current iteration; move ``best`` if it is strictly better.

        Collective: call on every rank (``metrics`` may be empty on ranks other than 0; rank 0's
        decision is broadcast). Saves the iteration first when it has no checkpoint yet, so the
        pointer always names a complete checkpoint. Returns whether ``best`` moved.
        """
        decision = None
        if _rank() == 0:
            value = metrics.get(self.best_metric)
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
        if _rank() == 0:
            record = {
                "checkpoint": name,
                "iteration": trainer.iteration,
                "metric": self.best_metric,
                "value": decision,
            }
            _write_atomic(self.root / "best", json.dumps(record) + "\n")
            self._rotate()  # the previous best is an ordinary checkpoint again
        barrier()
        return True


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (``/proc/<pid>/stat`` field 22), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class RunLock:
    """``<run_dir>/trainer.lock``: one trainer per run directory.

    The lock file holds the owner's pid, host and process start time. Another trainer finding
    it refuses to start (:class:`RunLockedError`), unless the owner is gone: same host and the
    pid is not running, or runs another process (a different start time); such a stale lock,
    left by a killed trainer, is taken over and reported. Released on exit.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "trainer.lock"
        self.held = False
        self.note: str | None = None

    def _owner(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _stale(self, owner: dict[str, Any] | None) -> bool:
        if owner is None:
            return True  # empty or torn: its writer died between create and write
        if owner.get("host") != socket.gethostname():
            return False  # cannot check another machine's processes
        pid = int(owner.get("pid", -1))
        if pid == os.getpid() or not process_alive(pid):
            return True
        start = owner.get("start_time")
        return start is not None and _process_start(pid) not in (None, start)

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_time": _process_start(os.getpid()),
            "started": _now(),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if not self._stale(owner):
                    assert owner is not None
                    raise RunLockedError(
                        f"{self.path.parent} is in use by another trainer (pid {owner.get('pid')}"
                        f" on {owner.get('host')}, since {owner.get('started')}): wait for it to "
                        f"end, or delete {self.path} if that trainer is gone"
                    ) from None
                self.note = (
                    f"took over a stale lock of pid {owner.get('pid')} (no longer running)"
                    if owner
                    else "took over an unreadable lock file"
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me) + "\n")
            self.held = True
            atexit.register(self.release)
            return self
        raise RunLockedError(f"{self.path}: could not be acquired (another trainer races for it)")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
