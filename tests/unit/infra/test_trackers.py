"""Optional W&B / MLflow trackers: validated at config time, imported only when configured,
offline by default, fed every iteration's scalars with step = iteration, resumed by run id, and
closed as failed when the training raises.

The MLflow and W&B tests use the real libraries (``pip install 'nemo-rence[mlflow,wandb]'``),
writing only under ``tmp_path`` (MLflow file store; W&B offline mode): no network.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nemo_rence.config import ConfigError, TrainConfig, compose
from nemo_rence.infra.metrics import MetricsLogger
from nemo_rence.infra.trackers import IDS_FILE, TrackingConfig, open_trackers


def _cfg(*backends: str, **tracking) -> TrainConfig:
    return TrainConfig(tracking=TrackingConfig(backends=backends, **tracking))


class _FakeTracker:
    name = "fake"
    run_id = "fake-1"

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict]] = []
        self.closed: list[bool] = []

    def log(self, step, metrics):
        self.logged.append((step, dict(metrics)))

    def close(self, failed=False):
        self.closed.append(failed)


# -- configuration --------------------------------------------------------------------------


def test_an_unknown_tracker_name_fails_at_compose_listing_the_allowed_names():
    with pytest.raises(ConfigError, match=r"tracking\.backends: unknown tracker 'tensorbord'") as e:
        compose(["tracking.backends=[tensorbord]"])
    assert "allowed: ['mlflow', 'wandb']" in str(e.value)


def test_a_configured_tracker_whose_package_is_missing_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # find_spec -> None, import -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'nemo-rence\[wandb\]'"):
        compose(["tracking.backends=[wandb]"])


def test_a_bad_wandb_mode_fails_naming_the_field_and_allowed_values():
    with pytest.raises(ConfigError, match=r"tracking\.wandb\.mode must be one of"):
        compose(["tracking.wandb.mode=cloud"])


def test_trackers_default_to_none_and_wandb_defaults_to_offline():
    cfg = compose([])
    assert cfg.tracking.backends == ()
    assert cfg.tracking.wandb.mode == "offline"
    assert cfg.tracking.mlflow.tracking_uri is None  # -> file:<run_dir>/mlruns


def test_no_tracker_configured_imports_neither_wandb_nor_mlflow(tmp_path):
    code = f"""
        import sys
        from nemo_rence.config import compose
        from nemo_rence.infra.metrics import MetricsLogger
        from nemo_rence.infra.trackers import open_trackers
        cfg = compose(["run.out_dir={tmp_path}"])
        with MetricsLogger({str(tmp_path)!r}, trackers=open_trackers(cfg, {str(tmp_path)!r})) as m:
            m.log(1, {{"loss/total": 0.5}})
        print(sorted(k for k in sys.modules if k.split(".")[0] in ("wandb", "mlflow")))
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert not (tmp_path / IDS_FILE).exists()


# -- the logger's contract with trackers ----------------------------------------------------


def test_trackers_get_every_finite_scalar_with_step_equal_to_the_iteration(tmp_path):
    fake = _FakeTracker()
    with MetricsLogger(tmp_path, tensorboard=False, trackers=[fake]) as logger:
        logger.log(1, {"loss/total": 0.5, "kl/coef": math.nan, "eval/note": "text"})
        logger.log(2, {"loss/total": 0.25})
    assert fake.logged == [(1, {"loss/total": 0.5}), (2, {"loss/total": 0.25})]
    assert fake.closed == [False]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0] == {"iteration": 1, "loss/total": 0.5, "kl/coef": None, "eval/note": None}


def test_close_in_a_finally_during_an_exception_marks_the_trackers_failed(tmp_path):
    fake = _FakeTracker()
    logger = MetricsLogger(tmp_path, tensorboard=False, trackers=[fake])
    with pytest.raises(RuntimeError):
        try:
            raise RuntimeError("training crashed")
        finally:
            logger.close()
    logger.close()  # idempotent
    assert fake.closed == [True]


# -- MLflow (real library, local file store) ------------------------------------------------


@pytest.fixture
def mlflow_client(tmp_path, monkeypatch):
    """A client reading the run's default store, ``file:<tmp_path>/mlruns``."""
    pytest.importorskip("mlflow", reason="MLflow not installed: pip install 'nemo-rence[mlflow]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3.7 wants the opt-in
    return MlflowClient((tmp_path.resolve() / "mlruns").as_uri())


def test_mlflow_records_the_config_as_params_and_each_iteration_as_a_step(tmp_path, mlflow_client):
    client = mlflow_client
    cfg = _cfg("mlflow", run_name="smoke", tags=("ci",))
    with MetricsLogger(tmp_path, tensorboard=False, trackers=open_trackers(cfg, tmp_path)) as m:
        m.log(1, {"loss/total": 0.5, "kl/coef": 0.001})
        m.log(2, {"loss/total": 0.25, "kl/coef": 0.002})
    run_id = json.loads((tmp_path / IDS_FILE).read_text())["mlflow"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "smoke"
    assert "ci" in run.data.tags
    assert run.data.params["loss.name"] == "rence"
    assert run.data.params["run.seed"] == str(cfg.run.seed)
    assert run.data.params["tracking.backends"] == '["mlflow"]'
    history = client.get_metric_history(run_id, "loss/total")
    assert [(h.step, h.value) for h in history] == [(1, 0.5), (2, 0.25)]
    assert [h.step for h in client.get_metric_history(run_id, "kl/coef")] == [1, 2]


def test_a_resumed_run_continues_the_same_mlflow_run(tmp_path, mlflow_client):
    client = mlflow_client
    with MetricsLogger(tmp_path, trackers=open_trackers(_cfg("mlflow"), tmp_path)) as m:
        m.log(1, {"loss/total": 0.5})
    first = json.loads((tmp_path / IDS_FILE).read_text())["mlflow"]
    resumed = _cfg("mlflow")
    resumed.run.iterations += 10  # a changed param on resume is kept, not an error
    with MetricsLogger(tmp_path, trackers=open_trackers(resumed, tmp_path)) as m:
        m.log(2, {"loss/total": 0.25})
    assert json.loads((tmp_path / IDS_FILE).read_text())["mlflow"] == first
    assert len(client.search_runs([client.get_run(first).info.experiment_id])) == 1
    history = client.get_metric_history(first, "loss/total")
    assert [(h.step, h.value) for h in history] == [(1, 0.5), (2, 0.25)]
    assert client.get_run(first).info.status == "FINISHED"


def test_an_exception_during_training_marks_the_mlflow_run_failed(tmp_path, mlflow_client):
    client = mlflow_client
    trackers = open_trackers(_cfg("mlflow"), tmp_path)
    with pytest.raises(RuntimeError), MetricsLogger(tmp_path, trackers=trackers) as m:
        m.log(1, {"loss/total": 0.5})
        raise RuntimeError("training crashed")
    run_id = json.loads((tmp_path / IDS_FILE).read_text())["mlflow"]
    assert client.get_run(run_id).info.status == "FAILED"


# -- W&B (real library, offline mode) -------------------------------------------------------


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="W&B not installed: pip install 'nemo-rence[wandb]'")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path / "run"


def _wandb_history(run_dir: Path, run_id: str) -> list[tuple[int, dict]]:
    """``(step, {key: value})`` of every history record in the offline run files of ``run_id``.

    A ``.wandb`` file is a LevelDB-style log (``:W&B`` header, 32 KiB blocks of records with a
    7-byte header: crc32, length, type) of ``wandb_internal_pb2.Record`` messages.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for path in sorted(run_dir.glob(f"wandb/offline-run-*-{run_id}*/run-{run_id}.wandb")):
        data, pos, chunks, pending = path.read_bytes(), 7, [], b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # block trailer padding
                pos += 32768 - pos % 32768
                continue
            length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
            chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind in (1, 2):  # FULL, FIRST
                pending = chunk
            elif kind in (3, 4):  # MIDDLE, LAST
                pending += chunk
            if kind in (1, 4):
                chunks.append(pending)
        for raw in chunks:
            record = pb.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "history":
                items = {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                    if not (i.key or i.nested_key[0]).startswith("_")
                }
                rows.append((record.history.step.num, items))
    return rows


def test_wandb_logs_offline_into_the_run_dir_with_step_equal_to_the_iteration(wandb_offline):
    run_dir = wandb_offline
    cfg = _cfg("wandb", run_name="smoke")
    with MetricsLogger(run_dir, tensorboard=False, trackers=open_trackers(cfg, run_dir)) as m:
        m.log(1, {"loss/total": 0.5, "kl/coef": 0.001})
        m.log(2, {"loss/total": 0.25, "kl/coef": 0.002})
    run_id = json.loads((run_dir / IDS_FILE).read_text())["wandb"]
    assert list(run_dir.glob(f"wandb/offline-run-*-{run_id}*/run-{run_id}.wandb"))
    assert _wandb_history(run_dir, run_id) == [
        (1, {"loss/total": 0.5, "kl/coef": 0.001}),
        (2, {"loss/total": 0.25, "kl/coef": 0.002}),
    ]


def test_a_resumed_run_reuses_the_wandb_run_id(wandb_offline):
    run_dir = wandb_offline
    with MetricsLogger(run_dir, tensorboard=False, trackers=open_trackers(_cfg("wandb"), run_dir)):
        pass
    first = json.loads((run_dir / IDS_FILE).read_text())["wandb"]
    trackers = open_trackers(_cfg("wandb"), run_dir)
    with MetricsLogger(run_dir, tensorboard=False, trackers=trackers) as m:
        m.log(3, {"loss/total": 0.125})
    assert trackers[0].run_id == first
    assert json.loads((run_dir / IDS_FILE).read_text())["wandb"] == first
    assert (3, {"loss/total": 0.125}) in _wandb_history(run_dir, first)
