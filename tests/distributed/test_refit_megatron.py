"""After a refit from a Megatron policy moved by optimizer steps, the hf engine scores tokens
exactly as the policy does (fp32, max |diff| <= 1e-4), at policy TP=1 and TP=2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, torchrun

WORKER = Path(__file__).parent / "workers" / "refit_megatron.py"


def _result(output: str) -> dict:
    line = next(ln for ln in output.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _check(result: dict) -> None:
    assert result["before"] > 1e-3, "the optimizer steps did not move the policy: test is vacuous"
    assert result["after"] <= 1e-4
    assert result["buckets"] > 1


def test_refit_from_a_tp1_megatron_policy_matches_its_logprobs():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(WORKER), "1"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    _check(_result(proc.stdout))


@pytest.mark.distributed
def test_refit_from_a_tp2_megatron_policy_matches_its_logprobs():
    _check(_result(torchrun(WORKER, "2", nproc=2)))
