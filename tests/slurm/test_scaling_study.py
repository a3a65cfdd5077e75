"""The scaling-study launcher plans every point with the memory planner (dry run: no cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_plans_each_point_and_writes_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "study"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "slurm" / "scaling_study.py"),
            "--out",
            str(out),
            "--models",
            "8B,70B",
            "--nodes",
            "1,2,8",
            "--dry-run",
            "--",
            "algorithm=grpo",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = {(p["model"], p["nodes"]): p for p in json.loads((out / "summary.json").read_text())}
    assert set(points) == {(m, n) for m in ("8B", "70B") for n in (1, 2, 8)}
    eight = points[("8B", 2)]
    assert (eight["tp"], eight["pp"], eight["dp"]) == (2, 1, 8) and eight["status"] == "dry-run"
    assert eight["peak_gib"] <= 80
    cmd = eight["command"]
    for part in (
        "--nodes=2",
        "--gpus-per-node=8",
        "policy.tensor_parallel=2",
        "policy.sequence_parallel=true",
        "algorithm=grpo",
        f"--output={out}/8B-2n/logs/slurm-%j.out",
    ):
        assert part in cmd, (part, cmd)
    # 70B does not fit 8 or 16 GPUs of 80 GiB: recorded, not submitted
    assert points[("70B", 1)]["status"] == "infeasible" and "command" not in points[("70B", 1)]
    # on 8 nodes it fits only with sequence parallelism (the recipe's layout)
    seventy = points[("70B", 8)]
    assert (seventy["tp"], seventy["pp"], seventy["dp"]) == (8, 2, 4), seventy
    assert seventy["peak_gib"] <= 80 and "policy.sequence_parallel=true" in seventy["command"]
    table = (out / "summary.md").read_text()
    assert table.count("\n") == 2 + 6 and "infeasible" in table
