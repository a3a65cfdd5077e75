"""After a refit from a Megatron policy moved by optimizer steps, the hf engine scores tokens
exactly as the policy does (fp32, max |diff| <= 1e-4), at policy TP=1 and TP=2, copying the
weights or sharing them (``share_weights``: only the fused q/k/v are copied)."""

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


def _check(result: dict, share: bool) -> None:
    assert result["before"] > 1e-3, "the optimizer steps did not move the policy: test is vacuous"
    assert result["after"] <= 1e-4
    assert result["buckets"] > 1
    if not share:
        assert result["shared_bytes"] == 0, result
    elif result["tp"] == 1:  # all but q/k/v (fused, interleaved in linear_qkv) shared
        assert result["shared_bytes"] == result["bytes"] - result["qkv_bytes"], result
    else:  # TP=2: the TP-replicated norms; the rest are freshly gathered full tensors
        assert result["shared_bytes"] == result["norm_bytes"], result


@pytest.mark.parametrize("share", [False, True])
def test_refit_from_a_tp1_megatron_policy_matches_its_logprobs(share):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = [sys.executable, str(WORKER), "1", *(["share"] if share else [])]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    _check(_result(proc.stdout), share)


@pytest.mark.distributed
@pytest.mark.parametrize("share", [False, True])
def test_refit_from_a_tp2_megatron_policy_matches_its_logprobs(share):
    _check(_result(torchrun(WORKER, "2", *(["share"] if share else []), nproc=2)), share)
