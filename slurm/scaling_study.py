#!/usr/bin/env python3
"""Scaling study: sweep model size x nodes, one SLURM job and one run directory per point.

For every (model, nodes) point the memory planner (``nemo_rence.plan``) picks the layout: the
feasible TP x PP x DP with the most data parallelism and the least recomputation that fits the
GPUs. Points where nothing fits are recorded as infeasible and not submitted. Each submitted point
runs ``slurm/submit.sh`` (so preemption, requeue and resume work as for any run) into
``<out>/<model>-<nodes>n/``; ``<out>/summary.md`` and ``summary.json`` hold the table.

    python slurm/scaling_study.py --out /lustre/runs/scaling --nodes 1,2,4,8 \\
        --container /lustre/images/nemo-rence.sqsh [--models 1.5B,4B,8B] [--dry-run] \\
        [-- extra Hydra overrides for every point, e.g. algorithm=grpo]
    python slurm/scaling_study.py --out /lustre/runs/scaling --status   # refresh job states

Model checkpoints are HF directories under ``--ckpt-root`` (default ``$NEMO_RENCE_CKPT_ROOT`` or
/checkpoints), named as in ``nemo_rence.plan.models``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = {
    "1.5B": "DeepSeek-R1-Distill-Qwen-1.5B",
    "4B": "Qwen3-4B",
    "8B": "Qwen3-8B",
    "14B": "Qwen3-14B",
    "32B": "Qwen3-32B",
    "70B": "Llama-3.1-70B",
}
COLUMNS = (
    "model",
    "nodes",
    "gpus",
    "params_b",
    "tp",
    "pp",
    "dp",
    "recompute",
    "peak_gib",
    "status",
    "job",
    "run_dir",
)


def plan_point(model: str, nodes: int, args: argparse.Namespace) -> dict[str, Any]:
    """The planner's layout for one point (``status`` 'infeasible' when nothing fits)."""
    from nemo_rence.config import compose
    from nemo_rence.plan.cli import plan_config
    from nemo_rence.plan.memory import GIB, total_params

    hf_dir = f"{args.ckpt_root}/{MODELS[model]}"
    base = [
        "scale=paper",
        "model=hf",
        f"model.hf_dir={hf_dir}",
        "rollout=trtllm",
        "policy.precision=bf16",
        *args.overrides,
    ]
    gpus = nodes * args.gpus_per_node
    # The rollout engine's TP (1, 2, 4 ... up to a node): the one whose recommended layout has
    # the lowest peak (a 70B engine does not fit one GPU; the recipes choose it the same way).
    # Sequence parallelism is free where TP > 1 (the planner applies it to those layouts only).
    plans = []
    for engine_tp in (t for t in (1, 2, 4, 8, 16) if t <= args.gpus_per_node):
        cfg = compose([*base, f"rollout.tensor_parallel={engine_tp}"])
        plans.append(
            (
                engine_tp,
                plan_config(
                    cfg,
                    gpus=gpus,
                    gpu_mem_gib=args.gpu_mem,
                    gpus_per_node=args.gpus_per_node,
                    sequence_parallel=True,
                ),
            )
        )
    fitting = [(e, q) for e, q in plans if q.recommended and q.recommended.chosen]
    engine_tp, p = (
        min(fitting, key=lambda eq: eq[1].recommended.chosen.peak) if fitting else plans[0]
    )
    base = [*base, f"rollout.tensor_parallel={engine_tp}"]
    point: dict[str, Any] = {
        "model": model,
        "nodes": nodes,
        "gpus": gpus,
        "params_b": round(total_params(p.arch) / 1e9, 2),
        "run_dir": str(Path(args.out) / f"{model}-{nodes}n"),
        "engine_tp": engine_tp,
        "job": None,
    }
    rec = p.recommended
    if rec is None or rec.chosen is None:
        best = min((m.peak for lp in p.layouts for m in lp.modes), default=float("nan"))
        return {
            **point,
            "tp": None,
            "pp": None,
            "dp": None,
            "recompute": None,
            "peak_gib": round(best / GIB, 1),
            "status": "infeasible",
            "overrides": [],
        }
    c = rec.chosen
    overrides = [
        *base,
        f"policy.tensor_parallel={rec.tp}",
        f"policy.pipeline_parallel={rec.pp}",
        # the schema's switch is a bool: selective and full both turn it on
        f"policy.recompute={'false' if c.recompute == 'none' else 'true'}",
        f"policy.sequence_parallel={'true' if rec.tp > 1 else 'false'}",
    ]
    return {
        **point,
        "tp": rec.tp,
        "pp": rec.pp,
        "dp": rec.dp,
        "recompute": c.recompute,
        "peak_gib": round(c.peak / GIB, 1),
        "status": "planned",
        "overrides": overrides,
    }


def submit(point: dict[str, Any], args: argparse.Namespace) -> None:
    cmd = [
        "bash",
        str(REPO / "slurm" / "submit.sh"),
        "--run-dir",
        point["run_dir"],
        "--nodes",
        str(point["nodes"]),
        "--gpus-per-node",
        str(args.gpus_per_node),
        "--time",
        args.time,
        "--job-name",
        f"rence-{point['model']}-{point['nodes']}n",
    ]
    if args.container:
        cmd += ["--container", args.container]
    if args.mounts:
        cmd += ["--mounts", args.mounts]
    if args.partition:
        cmd += ["--partition", args.partition]
    if args.dry_run:
        cmd.append("--dry-run")
    cmd += ["--", *point["overrides"]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    if args.dry_run:
        point["status"], point["command"] = "dry-run", out.strip()
    else:
        point["job"], point["status"] = int(out.strip().split(";")[0]), "submitted"


def refresh(point: dict[str, Any]) -> None:
    """Job state from scontrol (or sacct for jobs the controller has forgotten), last metrics."""
    if point.get("job") is None:
        return
    job = str(point["job"])
    state = ""
    proc = subprocess.run(
        ["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30, check=False
    )
    m = re.search(r"JobState=(\S+)", proc.stdout)
    if m:
        state = m.group(1)
    else:
        proc = subprocess.run(
            ["sacct", "-n", "-X", "-j", job, "-o", "State"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        state = proc.stdout.strip().split("\n")[0].strip()
    point["status"] = state or "unknown"
    metrics = Path(point["run_dir"]) / "metrics.jsonl"
    if metrics.is_file():
        lines = [ln for ln in metrics.read_text().splitlines() if ln.strip()]
        if lines:
            point["last_metrics"] = json.loads(lines[-1])


def write_summary(points: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(points, indent=1))
    rows = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for p in points:
        rows.append(
            "| " + " | ".join("" if p.get(c) is None else str(p.get(c)) for c in COLUMNS) + " |"
        )
    (out / "summary.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="study directory (one run dir per point)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)}")
    ap.add_argument("--nodes", default="1,2,4,8", help="comma-separated node counts")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--gpu-mem", type=float, default=80.0, help="GiB per GPU")
    ap.add_argument("--ckpt-root", default=os.environ.get("NEMO_RENCE_CKPT_ROOT", "/checkpoints"))
    ap.add_argument("--container", default="")
    ap.add_argument("--mounts", default="")
    ap.add_argument("--partition", default="")
    ap.add_argument("--time", default="04:00:00")
    ap.add_argument("--dry-run", action="store_true", help="plan and print, submit nothing")
    ap.add_argument("--status", action="store_true", help="refresh summary of a submitted study")
    args = ap.parse_args(argv)
    args.overrides = extra
    out = Path(args.out)
    if args.status:
        points = json.loads((out / "summary.json").read_text())
        for p in points:
            refresh(p)
        write_summary(points, out)
        return 0
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        ap.error(f"unknown model size(s) {unknown}; choose from {', '.join(MODELS)}")
    points = []
    for model in args.models.split(","):
        for nodes in (int(n) for n in args.nodes.split(",")):
            point = plan_point(model, nodes, args)
            if point["status"] == "planned":
                submit(point, args)
            points.append(point)
    write_summary(points, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
