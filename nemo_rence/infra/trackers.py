"""Optional experiment trackers (W&B, MLflow) next to the always-on JSONL and TensorBoard.

A tracker is chosen by name in ``tracking.backends`` and imported only when chosen, so neither
package is needed (nor imported) otherwise; each is an optional extra::

    pip install 'nemo-rence[wandb]'      # tracking.backends=[wandb]
    pip install 'nemo-rence[mlflow]'     # tracking.backends=[mlflow]

Both are offline-safe by default: W&B runs with ``mode='offline'`` (files under
``<run_dir>/wandb``, upload later with ``wandb sync``) unless ``tracking.wandb.mode=online``;
MLflow logs to a local file store ``file:<run_dir>/mlruns`` unless ``tracking.mlflow.tracking_uri``
names a server. Each tracker

1. opens (or, when ``<run_dir>/trackers.json`` holds its run id, resumes) one run,
2. records the run config (W&B config; MLflow params, flattened to ``section.field`` keys),
3. logs the finite scalars of every :meth:`MetricsLogger.log` call with ``step = iteration``,
4. closes with a success or failure status (:meth:`Tracker.close`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

__all__ = [
    "BACKENDS",
    "MlflowConfig",
    "MlflowTracker",
    "Tracker",
    "TrackingConfig",
    "WandbConfig",
    "WandbTracker",
    "check_backends",
    "open_trackers",
]

IDS_FILE = "trackers.json"
"""Run ids of the trackers, kept in the run directory so that a resumed run continues them."""


# --------------------------------------------------------------------------------------------
# Configuration (the ``tracking`` section of ``TrainConfig``)
# --------------------------------------------------------------------------------------------


@dataclass
class WandbConfig:
    """Weights & Biases settings (``pip install 'nemo-rence[wandb]'``)."""

    project: str = "nemo-rence"
    """W&B project."""
    entity: str | None = None
    """W&B entity (user or team); None: the account's default."""
    mode: str = "offline"
    """'offline' (files in <run_dir>/wandb, upload later with `wandb sync`) or 'online'."""

    def __post_init__(self) -> None:
        allowed = ["offline", "online"]
        if self.mode not in allowed:
            raise ValueError(f"tracking.wandb.mode must be one of {allowed}, got {self.mode!r}")


@dataclass
class MlflowConfig:
    """MLflow settings (``pip install 'nemo-rence[mlflow]'``)."""

    tracking_uri: str | None = None
    """Tracking server or store; None: the local file store file:<run_dir>/mlruns."""
    experiment: str = "nemo-rence"
    """Experiment the run is filed under (created when missing)."""


@dataclass
class TrackingConfig:
    """Experiment trackers besides metrics.jsonl and TensorBoard, which are always written.

    Like every section, a bad value raises ``ValueError`` naming the field; ``config.build``
    reports it as a ``ConfigError`` at start-up, before any model is built.
    """

    backends: tuple[str, ...] = ()
    """Trackers to log to, any of 'mlflow', 'wandb' (e.g. tracking.backends=[wandb,mlflow])."""
    run_name: str | None = None
    """Run name shown by the trackers; None: the run directory's name."""
    tags: tuple[str, ...] = ()
    """Tags of the run (W&B tags; MLflow tags with an empty value)."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """W&B settings, used when 'wandb' is in backends."""
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    """MLflow settings, used when 'mlflow' is in backends."""

    def __post_init__(self) -> None:
        if isinstance(self.backends, str):  # tracking.backends=wandb
            self.backends = (self.backends,)
        check_backends(self.backends)  # before any model is built


class RunConfigWithTracking(Protocol):
    """What :func:`open_trackers` reads of a run's config (``TrainConfig``): a dataclass
    (recorded whole by the trackers) with a ``tracking`` section."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    tracking: TrackingConfig

    def to_dict(self) -> dict[str, Any]:
        """The whole config as plain containers."""
        ...


class Tracker(Protocol):
    """One external tracker run."""

    name: str
    run_id: str

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log finite scalars at ``step`` (the training iteration)."""

    def close(self, failed: bool = False) -> None:
        """End the run, marking it failed when the training raised."""


class WandbTracker:
    """A Weights & Biases run (``wandb.init``); offline unless ``mode='online'``."""

    name = "wandb"

    def __init__(
        self,
        run_dir: Path,
        config: Mapping[str, Any],
        *,
        project: str,
        entity: str | None,
        mode: str,
        run_name: str,
        tags: Sequence[str],
        run_id: str | None,
    ) -> None:
        import wandb

        self.run_id = run_id or uuid.uuid4().hex[:16]
        self._run = wandb.init(
            project=project,
            entity=entity,
            mode=mode,  # type: ignore[arg-type]
            dir=str(run_dir),
            name=run_name,
            tags=list(tags),
            id=self.run_id,
            resume="allow",
            settings=wandb.Settings(console="off"),
        )
        self._run.config.update(dict(config), allow_val_change=True)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self._run.log(dict(metrics), step=step)

    def close(self, failed: bool = False) -> None:
        self._run.finish(exit_code=1 if failed else 0)


class MlflowTracker:
    """An MLflow run through ``MlflowClient`` (no global active run); file store by default."""

    name = "mlflow"
    _PARAM_CHARS = 500  # the smallest limit MLflow versions put on a param value
    _PARAMS_PER_CALL = 100  # MLflow's log_batch limit

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        tags: Sequence[str],
        run_id: str | None,
    ) -> None:
        if tracking_uri.startswith("file:"):
            # MLflow >= 3.7 refuses the file store unless told it is wanted; it is, offline.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import RunStatus
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri)
        self._status = RunStatus
        known: dict[str, str] = {}
        run = None
        if run_id is not None:
            try:
                run = self._client.get_run(run_id)
                self._client.update_run(run_id, status="RUNNING")
                known = dict(run.data.params)
            except MlflowException:  # not in this store (tracking_uri changed): start anew
                run = None
        if run is None:
            found = self._client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else self._client.create_experiment(experiment)
            run = self._client.create_run(exp_id, run_name=run_name, tags=dict.fromkeys(tags, ""))
        self.run_id = run.info.run_id
        # MLflow params are immutable: a resumed run adds only keys it has not logged yet
        # (a changed value stays in <run_dir>/config.json, rewritten at every start).
        params = {k: v[: self._PARAM_CHARS] for k, v in _flatten(config).items() if k not in known}
        self._log_params(params)

    def _log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), self._PARAMS_PER_CALL):
            self._client.log_batch(self.run_id, params=items[i : i + self._PARAMS_PER_CALL])

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if batch:
            self._client.log_batch(self.run_id, metrics=batch)

    def close(self, failed: bool = False) -> None:
        status = self._status.FAILED if failed else self._status.FINISHED
        self._client.set_terminated(self.run_id, self._status.to_string(status))


@dataclass(frozen=True)
class Backend:
    """A tracker by name: the package it needs, the extra that installs it, how to open it."""

    package: str
    extra: str
    open: Callable[[TrackingConfig, Path, Mapping[str, Any], str | None], Tracker]


def _open_wandb(
    tracking: TrackingConfig, run_dir: Path, config: Mapping[str, Any], run_id: str | None
) -> Tracker:
    return WandbTracker(
        run_dir,
        config,
        project=tracking.wandb.project,
        entity=tracking.wandb.entity,
        mode=tracking.wandb.mode,
        run_name=tracking.run_name or run_dir.resolve().name,
        tags=tracking.tags,
        run_id=run_id,
    )


def _open_mlflow(
    tracking: TrackingConfig, run_dir: Path, config: Mapping[str, Any], run_id: str | None
) -> Tracker:
    uri = tracking.mlflow.tracking_uri or (run_dir.resolve() / "mlruns").as_uri()
    return MlflowTracker(
        config,
        tracking_uri=uri,
        experiment=tracking.mlflow.experiment,
        run_name=tracking.run_name or run_dir.resolve().name,
        tags=tracking.tags,
        run_id=run_id,
    )


BACKENDS: dict[str, Backend] = {
    "mlflow": Backend(package="mlflow", extra="mlflow", open=_open_mlflow),
    "wandb": Backend(package="wandb", extra="wandb", open=_open_wandb),
}
"""The registry of trackers; ``tracking.backends`` names its keys."""


def check_backends(names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the field and the fix when a name in ``tracking.backends`` is
    unknown or its package is missing.

    Looks the package up without importing it (``importlib.util.find_spec``).
    """
    for name in names:
        if name not in BACKENDS:
            raise ValueError(
                f"tracking.backends: unknown tracker {name!r}; allowed: {sorted(BACKENDS)}"
            )
        backend = BACKENDS[name]
        if importlib.util.find_spec(backend.package) is None:
            raise ValueError(
                f"tracking.backends: tracker {name!r} needs the {backend.package!r} package, "
                f"which is not installed: pip install 'nemo-rence[{backend.extra}]'"
            )


def open_trackers(cfg: RunConfigWithTracking, run_dir: str | Path) -> list[Tracker]:
    """Open the trackers of ``cfg.tracking.backends``, resuming the runs named in
    ``<run_dir>/trackers.json``, and record the run ids there. No backend: no import, ``[]``."""
    names = list(dict.fromkeys(cfg.tracking.backends))
    if not names:
        return []
    run_dir = Path(run_dir)
    ids_path = run_dir / IDS_FILE
    ids: dict[str, str] = json.loads(ids_path.read_text()) if ids_path.is_file() else {}
    config = cfg.to_dict()
    opened: list[Tracker] = []
    try:
        for name in names:
            tracker = BACKENDS[name].open(cfg.tracking, run_dir, config, ids.get(name))
            opened.append(tracker)
            ids[name] = tracker.run_id
    except BaseException:
        for tracker in opened:
            tracker.close(failed=True)
        raise
    ids_path.write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n")
    return opened


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"run": {"seed": 0}}`` -> ``{"run.seed": "0"}`` (sequences as JSON)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{path}."))
        elif isinstance(value, list | tuple):
            out[path] = json.dumps(list(value))
        else:
            out[path] = str(value)
    return out
