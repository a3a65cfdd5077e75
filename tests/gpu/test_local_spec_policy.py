"""MegatronPolicy on one GPU without Transformer Engine (local spec, bf16, NCCL world of one).

Needs CUDA only (``pytest -m gpu``; scripts/gpu_check.sh runs it on a bare GPU machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.gpu

WORKER = Path(__file__).parent / "workers" / "local_spec_policy.py"
CHECKS = (
    "nccl_world_of_one",
    "local_spec_logprobs_match_hf_logits",
    "local_spec_train_step_with_megatron_distributed_optimizer",
    "local_spec_save_load_restores_weights_and_optimizer_state",
)


def test_local_spec_bf16_policy_matches_hf_trains_and_round_trips_on_cuda(tmp_path):
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # a world of one, not a launcher's
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    for name in CHECKS:
        assert f"CHECK {name} OK" in log, log[-4000:]
