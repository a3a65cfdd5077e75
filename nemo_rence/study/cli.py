"""``nemo-rence study STUDY.yaml|NAME``: run every arm x seed at one budget, then report.

    nemo-rence study cpu_quick --out-dir runs/study-cpu       # conf/study/cpu_quick.yaml
    nemo-rence study rence_vs_baselines --scale paper --executor slurm --out-dir /lustre/s1
    nemo-rence study my_study.yaml --report-only              # report what is there
    nemo-rence study my_study.yaml --dry-run                  # print the commands

Rerunning a study resumes its unfinished runs and skips finished ones (:mod:`.runs`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="a study file (YAML/JSON) or a preset in conf/study/")
    parser.add_argument(
        "--scale", default="", help="a variant of the study (cpu | paper; default: its first)"
    )
    parser.add_argument(
        "--out-dir", default="", help="study directory (default: runs/study-NAME[-SCALE])"
    )
    parser.add_argument(
        "--executor", default="", help="local | slurm | gpus (default: the study's)"
    )
    parser.add_argument("--gpus", default="", help="executor gpus: GPU ids, e.g. 0,1,2,3")
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="executor local: runs side by side (default: the study's)",
    )
    parser.add_argument("--report-only", action="store_true", help="write the report; run nothing")
    parser.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    parser.add_argument("--task", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task-index", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from nemo_rence.errors import ConfigError
    from nemo_rence.study import runs
    from nemo_rence.study.config import load_study

    try:
        study = load_study(args.study, args.scale)
        if args.executor:
            study = dataclasses.replace(study, executor=args.executor)
        if args.gpus:
            study = dataclasses.replace(study, gpus=tuple(args.gpus.split(",")))
        if args.jobs:
            study = dataclasses.replace(study, jobs=args.jobs)
    except ConfigError as err:
        print(f"nemo-rence study: {err}", file=sys.stderr)
        return 2
    if args.task:  # one SLURM array task: become that run's `nemo-rence train`
        study_dir = Path(args.study).resolve().parent
        index = args.task_index
        if index is None:
            index = int(os.environ["SLURM_ARRAY_TASK_ID"])
        spec = runs.plan_runs(study, study_dir)[index]
        cmd = runs.train_command(study, spec)
        os.execv(cmd[0], cmd)
    default_dir = f"runs/study-{study.name}" + (f"-{study.scale}" if study.scale else "")
    study_dir = Path(args.out_dir or default_dir)
    specs = runs.plan_runs(study, study_dir)
    pending = [s for s in specs if not runs.is_done(study, s)]
    print(
        f"study {study.name}: {len(study.arms)} arms, {len(specs)} runs at "
        f"{study.budget.amount:g} {study.budget.kind}; {len(specs) - len(pending)} of "
        f"{len(specs)} runs done; directory {study_dir}",
        flush=True,
    )
    codes: dict[str, int] = {}
    if not args.report_only and pending:
        study_dir.mkdir(parents=True, exist_ok=True)
        (study_dir / runs.CONFIG_FILE).write_text(json.dumps(study.to_dict(), indent=1) + "\n")
        try:
            codes = _execute(study, study_dir, pending, args.dry_run)
        except ConfigError as err:
            print(f"nemo-rence study: {err}", file=sys.stderr)
            return 2
        if args.dry_run or study.executor == "slurm":
            return max(codes.values(), default=0)
    from nemo_rence.study.report import unit, write_report

    report = write_report(study, study_dir)
    u, suffix = unit(study.metric)
    for a in report["arms"]:
        lo, hi = a["ci"]
        fmt = ".1f" if suffix else ".4g"  # a share in points, else the metric's own digits
        print(
            f"  {a['label']:<24} {study.metric} {u * a['mean']:{fmt}}{suffix} "
            f"[{u * lo:{fmt}}, {u * hi:{fmt}}] over {len(a['seeds'])} seeds",
            flush=True,
        )
    print(f"report: {study_dir / 'study.md'}", flush=True)
    failed = {k: v for k, v in codes.items() if v != 0}
    if failed:
        print(f"failed runs (see {study_dir}/logs/): {failed}", file=sys.stderr)
        return 1
    return 0


def _execute(study, study_dir: Path, pending, dry_run: bool) -> dict[str, int]:
    from nemo_rence.study import runs

    if study.executor == "slurm":
        cmd = runs.slurm_command(study, study_dir, pending, dry_run=dry_run)
        print(" ".join(cmd), flush=True)
        return {"submit": subprocess.run(cmd, check=False).returncode}
    if dry_run:
        if study.executor == "gpus":
            gpus = list(study.gpus) or runs.visible_gpus()
            for gpu, cmd in runs.gpu_commands(study, pending, gpus):
                print(f"CUDA_VISIBLE_DEVICES={gpu} {' '.join(cmd)}")
        else:
            for spec in pending:
                print(" ".join(runs.train_command(study, spec)))
        return {}
    if study.executor == "gpus":
        gpus = list(study.gpus) or runs.visible_gpus()
        return runs.run_gpus(study, study_dir, pending, gpus)
    return runs.run_local(study, study_dir, pending)
