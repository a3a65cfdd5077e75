"""The study file: arms, seeds, common overrides, one budget, an executor.

A preset in ``conf/study/NAME.yaml`` (or any YAML path)::

    name: rence_vs_grpo
    arms:                       # the first arm is the one the others are compared against
      - {name: rence, overrides: [algorithm=rence]}
      - {name: grpo, overrides: [algorithm=grpo, optim.n_update=4]}
    seeds: [0, 1, 2]
    overrides: [run.eval_every=1]          # every arm, before the arm's own
    budget: {kind: rollouts, amount: 2000} # run.budget_kind / run.budget_amount of every run
    max_iterations: 1000                   # run.iterations: a cap; the budget ends the runs
    executor: local                        # local | slurm | gpus
    scales:                                # optional variants, chosen with --scale
      cpu: {overrides: [...], budget: {...}}
      paper: {overrides: [...], budget: {...}, seeds: [...], executor: slurm}

A scale's ``overrides`` are appended to the common ones; its other keys replace the top level's.
Without ``--scale``, a study with scales uses the first one listed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_rence.config import BUDGET_KINDS, CONF_DIR
from nemo_rence.errors import ConfigError

__all__ = ["EXECUTORS", "STUDY_DIR", "Arm", "Budget", "SlurmSettings", "StudyConfig", "load_study"]

STUDY_DIR = CONF_DIR / "study"
EXECUTORS = ("local", "slurm", "gpus")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Arm:
    """One method: a name (its directory) and the overrides that make it."""

    name: str
    overrides: tuple[str, ...] = ()
    label: str = ""
    """How the report names it (default: ``name``), e.g. the paper's row name."""
    seeds: tuple[int, ...] = ()
    """This arm's seeds when not the study's (e.g. one seed to screen a candidate, three for
    the arms compared); differences to another arm pair the seeds both have."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"study.arms: name {self.name!r} must be a plain directory name")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"study.arms[{self.name}].seeds: distinct seeds, got {self.seeds}")


@dataclass(frozen=True)
class Budget:
    """What every run spends: ``kind`` in :data:`nemo_rence.config.BUDGET_KINDS`, ``amount``."""

    kind: str = "rollouts"
    amount: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise ConfigError(
                f"study.budget.kind: {self.kind!r} is not one of {', '.join(BUDGET_KINDS)}"
            )
        if not float(self.amount) > 0:
            raise ConfigError(f"study.budget.amount must be > 0, got {self.amount!r}")


@dataclass(frozen=True)
class SlurmSettings:
    """The job array's resources (``slurm/submit.sh`` options) for ``executor: slurm``."""

    nodes: int = 1
    gpus_per_node: int = 8
    """GPUs (and tasks) per node; 0: a CPU job."""
    ntasks_per_node: int = 0
    """Tasks per node (0: submit.sh's default, one per GPU or 2 for a CPU job)."""
    time: str = "04:00:00"
    partition: str = ""
    account: str = ""
    container: str = ""


@dataclass(frozen=True)
class StudyConfig:
    """A resolved study (one scale chosen); see the module doc for the file."""

    name: str
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    budget: Budget
    overrides: tuple[str, ...] = ()
    max_iterations: int = 1000
    """``run.iterations`` of every run: a cap high enough that the budget ends the run."""
    executor: str = "local"
    metric: str = "eval/accuracy"
    """The held-out metric compared at equal budget (a key of the runs' evaluation rows)."""
    also: tuple[str, ...] = ()
    """Other evaluation metrics reported beside it at the same evaluation, as means over seeds
    (e.g. ``eval/boxed``, ``eval/response_tokens``: what a policy learned besides the metric)."""
    tables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The paper's table layouts when the arms are the paper's: title -> arm names, the first
    being that table's reference row (``{"Table 3": [rence, rence_t_easy_099]}``)."""
    description: str = ""
    scale: str = ""
    bootstrap_samples: int = 2000
    bootstrap_seed: int = 0
    gpus: tuple[str, ...] = ()
    """``executor: gpus``: the GPU ids, one run per GPU at a time (default: all visible)."""
    jobs: int = 1
    """``executor: local``: runs side by side on this machine, each with ``cores // jobs`` torch
    threads (1: one after another)."""
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    keep_checkpoints: int = 1
    """``run.keep_checkpoints`` of every run: the newest complete checkpoints each run keeps
    (plus the one its ``best`` pointer names). Runs are compared by their evaluation rows, so
    one resumable checkpoint is enough; each costs parameters + Adam state (about 1.5 GB for the
    135M CPU model, ~16 bytes per parameter at scale)."""

    def __post_init__(self) -> None:
        if not self.arms:
            raise ConfigError("study.arms: at least one arm")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ConfigError(f"study.arms: names must differ, got {names}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"study.seeds: distinct seeds, at least one, got {list(self.seeds)}")
        if self.executor not in EXECUTORS:
            raise ConfigError(
                f"study.executor: {self.executor!r} is not one of {', '.join(EXECUTORS)}"
            )
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise ConfigError(f"study.jobs: an integer >= 1 (runs side by side), got {self.jobs!r}")
        if not isinstance(self.keep_checkpoints, int) or self.keep_checkpoints < 1:
            raise ConfigError(
                f"study.keep_checkpoints: an integer >= 1 (checkpoints each run keeps), "
                f"got {self.keep_checkpoints!r}"
            )
        if self.max_iterations < 1 or self.bootstrap_samples < 100:
            raise ConfigError("study.max_iterations >= 1 and study.bootstrap_samples >= 100")
        for title, rows in self.tables.items():
            missing = [r for r in rows if r not in names]
            if missing or not rows:
                raise ConfigError(f"study.tables[{title!r}]: rows {missing or rows} are not arms")
        for o in self.overrides + tuple(o for a in self.arms for o in a.overrides):
            if o.split("=", 1)[0].lstrip("+") in _STUDY_OWNED:
                raise ConfigError(f"study overrides: {o!r} is set by the study for every run")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], scale: str = "") -> StudyConfig:
        """Build from a parsed study file, applying ``scales[scale]`` when given."""
        data = dict(data)
        scales = data.pop("scales", None) or {}
        resolved = str(data.pop("scale", "") or "")  # a resolved study (study-config.json)
        scale = scale or (next(iter(scales)) if scales else "")  # the first scale by default
        if scale:
            if scale not in scales:
                raise ConfigError(
                    f"study.scales: no scale {scale!r}; this study has {sorted(scales) or 'none'}"
                )
            variant = dict(scales[scale])
            data["overrides"] = list(data.get("overrides") or []) + list(
                variant.pop("overrides", None) or []
            )
            data.update(variant)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"study: unknown key(s) {unknown}; allowed: {sorted(known)}")
        try:
            arms = tuple(
                Arm(
                    name=str(a["name"]),
                    overrides=tuple(str(o) for o in a.get("overrides") or ()),
                    label=str(a.get("label") or ""),
                    seeds=tuple(int(x) for x in a.get("seeds") or ()),
                )
                for a in data.pop("arms", None) or ()
            )
            budget = Budget(**dict(data.pop("budget", None) or {}))
            slurm = SlurmSettings(**dict(data.pop("slurm", None) or {}))
        except (KeyError, TypeError) as err:
            raise ConfigError(f"study: bad arm, budget or slurm entry ({err})") from err
        return cls(
            arms=arms,
            budget=budget,
            slurm=slurm,
            scale=scale or resolved,
            name=str(data.pop("name", "study")),
            seeds=tuple(int(s) for s in data.pop("seeds", None) or ()),
            also=tuple(str(m) for m in data.pop("also", None) or ()),
            overrides=tuple(str(o) for o in data.pop("overrides", None) or ()),
            gpus=tuple(str(g) for g in data.pop("gpus", None) or ()),
            tables={
                str(t): tuple(str(r) for r in rows)
                for t, rows in (data.pop("tables", None) or {}).items()
            },
            **data,
        )


#: run fields every run of a study gets from the study itself
_STUDY_OWNED = (
    "run.seed",
    "run.out_dir",
    "run.budget_kind",
    "run.budget_amount",
    "run.iterations",
    "run.keep_checkpoints",
)


def preset_names() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


def load_study(spec: str | Path, scale: str = "") -> StudyConfig:
    """A study from a YAML / JSON path, or the name of a preset in ``conf/study/``."""
    import yaml

    path = Path(spec)
    if not path.is_file():
        name = str(spec).removeprefix("study=")
        path = STUDY_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"study: {spec!r} is neither a file nor a preset; presets: {preset_names()}"
            )
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"study: {path} must hold a mapping")
    return StudyConfig.from_mapping(data, scale)
