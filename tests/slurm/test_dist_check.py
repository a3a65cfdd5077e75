"""``nemo_rence.infra.dist_check`` under torchrun (no cluster): rendezvous, all-reduce, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import torchrun

pytestmark = pytest.mark.distributed


def test_two_processes_all_reduce_checkpoint_and_resume(tmp_path: Path) -> None:
    module = Path(__file__).resolve().parents[2] / "nemo_rence" / "infra" / "dist_check.py"
    out = tmp_path / "run"
    log = torchrun(module, "--out", str(out), "--steps", "2", nproc=2, timeout=180)
    assert "DIST_CHECK OK world_size=2 steps=2" in log
    report = json.loads((out / "dist_check.json").read_text())
    assert report["world_size"] == 2 and report["allreduce_sum"] == 3.0
    assert (out / "checkpoints" / "latest").read_text().strip() == "iter-000002"
    # a second launch with more steps resumes from the checkpoint instead of starting over
    log = torchrun(module, "--out", str(out), "--steps", "3", nproc=2, timeout=180)
    assert "RESUMED from step 2 (iter-000002)" in log
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
