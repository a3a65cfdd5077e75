"""The planner's CPU estimate against the measured peak memory of a real MegatronPolicy step.

Runs ``bench/planner_validation.py`` for the tiny Llama case (a fresh process builds the policy,
takes two AdamW steps, and reports its peak RSS growth); the full set of cases, SmolLM2-135M
included, is in the benchmark (docs/cluster.md lists the figures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.timeout(300)
def test_cpu_estimate_within_20_percent_of_measured_peak() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "planner_validation.py"), "--cases", "tiny-256"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    case = json.loads(proc.stdout)["cases"]["tiny-256"]
    assert case["measured"] > 100, case  # MiB: the measurement saw the model and activations
    assert abs(case["rel_error"]) <= 0.20, case
