"""The runs of a study: one ordinary run directory per arm x seed, and three ways to run them.

``<study_dir>/<arm>/seed<k>`` is trained by ``nemo-rence train <common> <arm> run.seed=k
run.out_dir=... run.budget_kind=... run.budget_amount=... run.iterations=<cap>
run.keep_checkpoints=<study.keep_checkpoints>``, so it resumes
like any run (``run.resume=auto``). A run is *done* when its last ``metrics.jsonl`` row is the
final evaluation (``eval/is_after``: the budget or ``run.iterations`` ended it) for this study's
budget; rerunning a study skips done runs and resumes the others.

Executors:
    local   one run after another in this process's machine (``subprocess``)
    gpus    side by side, one run per GPU at a time (``CUDA_VISIBLE_DEVICES``)
    slurm   one job array through ``slurm/submit.sh`` (``sbatch --array``), one task per run;
            each task runs ``nemo-rence study <study_dir>/study-config.json --task`` which
            becomes that run's ``nemo-rence train`` (``$SLURM_ARRAY_TASK_ID`` picks the run)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nemo_rence.errors import ConfigError
from nemo_rence.study.config import StudyConfig

__all__ = [
    "CONFIG_FILE",
    "RunSpec",
    "array_spec",
    "cpu_threads_per_job",
    "gpu_commands",
    "is_done",
    "plan_runs",
    "run_gpus",
    "run_local",
    "slurm_command",
    "task_command",
    "train_command",
]

CONFIG_FILE = "study-config.json"
"""The resolved study, written into the study directory (the SLURM tasks read it)."""
SUBMIT = Path(__file__).resolve().parents[2] / "slurm" / "submit.sh"


@dataclass(frozen=True)
class RunSpec:
    """One arm x seed: its index in the study (the array task id) and its run directory."""

    index: int
    arm: str
    seed: int
    overrides: tuple[str, ...]
    directory: Path

    @property
    def label(self) -> str:
        return f"{self.arm}/seed{self.seed}"


def plan_runs(study: StudyConfig, study_dir: Path) -> list[RunSpec]:
    """Every arm x seed (an arm's own ``seeds`` or the study's), arm-major (the order of the
    local executor and of the array)."""
    out: list[RunSpec] = []
    for arm in study.arms:
        for seed in arm.seeds or study.seeds:
            out.append(
                RunSpec(
                    len(out),
                    arm.name,
                    seed,
                    (*study.overrides, *arm.overrides),
                    Path(study_dir) / arm.name / f"seed{seed}",
                )
            )
    return out


def train_command(study: StudyConfig, spec: RunSpec, python: str = sys.executable) -> list[str]:
    """The ``nemo-rence train`` command of one run (the study's own fields last)."""
    b = study.budget
    return [
        python,
        "-m",
        "nemo_rence",
        "train",
        *spec.overrides,
        f"run.seed={spec.seed}",
        f"run.out_dir={spec.directory}",
        f"run.budget_kind={b.kind}",
        f"run.budget_amount={b.amount:g}",
        f"run.iterations={study.max_iterations}",
        f"run.keep_checkpoints={study.keep_checkpoints}",
        "--no-progress",
    ]


def is_done(study: StudyConfig, spec: RunSpec) -> bool:
    """The run ended with its final evaluation under this study's budget (module doc)."""
    config, metrics = spec.directory / "config.json", spec.directory / "metrics.jsonl"
    if not (config.is_file() and metrics.is_file()):
        return False
    run = json.loads(config.read_text()).get("run", {})
    if run.get("budget_kind") != study.budget.kind or float(run.get("budget_amount", -1)) != float(
        study.budget.amount
    ):
        return False
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    return bool(lines) and bool(json.loads(lines[-1]).get("eval/is_after"))


def _log_file(study_dir: Path, spec: RunSpec) -> Path:
    path = Path(study_dir) / "logs" / f"{spec.arm}-seed{spec.seed}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def run_local(
    study: StudyConfig,
    study_dir: Path,
    specs: Sequence[RunSpec],
    say: Callable[[str], None] = print,
) -> dict[str, int]:
    """``study.jobs`` runs at a time on this machine (one after another when 1), each with
    ``cores // jobs`` torch threads; each one's output goes to ``<study_dir>/logs/<arm>-seed<k>.log``.

    Returns run label -> exit code. A failed run does not stop the others.
    """
    if study.jobs == 1:
        codes: dict[str, int] = {}
        for spec in specs:
            log = _log_file(study_dir, spec)
            say(f"[{spec.index + 1}/{len(plan_runs(study, study_dir))}] {spec.label} -> {log}")
            start = time.perf_counter()
            with log.open("a") as out:
                rc = subprocess.run(
                    train_command(study, spec), stdout=out, stderr=subprocess.STDOUT, check=False
                ).returncode
            codes[spec.label] = rc
            say(f"    exit {rc} after {time.perf_counter() - start:.0f} s")
        return codes
    threads = str(cpu_threads_per_job(study.jobs))
    slots = {f"job {i}": {"OMP_NUM_THREADS": threads} for i in range(study.jobs)}
    return _run_in_slots(study, study_dir, specs, slots, say)


def cpu_threads_per_job(jobs: int) -> int:
    """The cores this process may use, shared evenly by ``jobs`` side-by-side runs (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // jobs)


def gpu_commands(
    study: StudyConfig, specs: Sequence[RunSpec], gpus: Sequence[str]
) -> list[tuple[str, list[str]]]:
    """(CUDA_VISIBLE_DEVICES, command) of each run: run i on GPU ``gpus[i % len(gpus)]``, the
    order in which :func:`run_gpus` starts them when every run takes as long."""
    if not gpus:
        raise ConfigError("study.gpus: no GPU to run on (set study.gpus or CUDA_VISIBLE_DEVICES)")
    return [(gpus[i % len(gpus)], train_command(study, s)) for i, s in enumerate(specs)]


def visible_gpus() -> list[str]:
    """The GPUs of this node: ``CUDA_VISIBLE_DEVICES``, else ``torch.cuda.device_count()``."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        return [g for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def run_gpus(
    study: StudyConfig,
    study_dir: Path,
    specs: Sequence[RunSpec],
    gpus: Sequence[str],
    say: Callable[[str], None] = print,
) -> dict[str, int]:
    """Side by side, one run per GPU at a time; the next run takes the first GPU freed."""
    gpu_commands(study, specs, gpus)  # the same check as the dry run
    slots = {f"GPU {g}": {"CUDA_VISIBLE_DEVICES": g} for g in gpus}
    return _run_in_slots(study, study_dir, specs, slots, say)


def _run_in_slots(
    study: StudyConfig,
    study_dir: Path,
    specs: Sequence[RunSpec],
    slots: Mapping[str, Mapping[str, str]],
    say: Callable[[str], None],
) -> dict[str, int]:
    """Run ``specs`` in order, one per slot at a time (a slot = the environment its run gets:
    a GPU, a share of the cores); the next run takes the first slot freed."""
    queue = list(specs)
    free = list(slots)
    running: dict[str, tuple[RunSpec, subprocess.Popen]] = {}
    codes: dict[str, int] = {}
    while queue or running:
        while queue and free:
            spec, slot = queue.pop(0), free.pop(0)
            env = dict(os.environ, **slots[slot])
            with _log_file(study_dir, spec).open("a") as out:
                proc = subprocess.Popen(
                    train_command(study, spec), env=env, stdout=out, stderr=subprocess.STDOUT
                )
            running[slot] = (spec, proc)
            say(f"{slot}: {spec.label}")
        time.sleep(1.0)
        for slot, (spec, proc) in list(running.items()):
            if proc.poll() is not None:
                codes[spec.label] = int(proc.returncode)
                say(f"{slot}: {spec.label} exit {proc.returncode}")
                del running[slot]
                free.append(slot)
    return codes


def task_command(study_dir: Path, python: str = sys.executable) -> str:
    """What each array task runs (``--entry`` of ``slurm/submit.sh``; no spaces allowed)."""
    config = Path(study_dir).resolve() / CONFIG_FILE
    if " " in f"{python}{config}":
        raise ConfigError(f"study: slurm needs paths without spaces ({python}, {config})")
    return f"{python} -m nemo_rence study {config} --task"


def array_spec(indices: Sequence[int]) -> str:
    """``sbatch --array`` of these task ids, contiguous ones as ranges: [0,1,2,5] -> '0-2,5'."""
    parts: list[str] = []
    for i in sorted(set(indices)):
        if parts and parts[-1].split("-")[-1] == str(i - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{i}"
        else:
            parts.append(str(i))
    return ",".join(parts)


def slurm_command(
    study: StudyConfig,
    study_dir: Path,
    specs: Sequence[RunSpec],
    dry_run: bool = False,
    submit: Path = SUBMIT,
) -> list[str]:
    """``slurm/submit.sh`` of the job array: one task per run in ``specs`` (by index)."""
    s = study.slurm
    cmd = [
        str(submit),
        "--run-dir",
        str(Path(study_dir).resolve()),
        "--job-name",
        f"study-{study.name}",
        "--nodes",
        str(s.nodes),
        "--gpus-per-node",
        str(s.gpus_per_node),
        "--time",
        s.time,
        "--entry",
        task_command(study_dir),
        "--sbatch-arg",
        "--array=" + array_spec([spec.index for spec in specs]),
    ]
    for flag, value in (("--partition", s.partition), ("--account", s.account)):
        if value:
            cmd += [flag, value]
    if s.ntasks_per_node:
        cmd += ["--ntasks-per-node", str(s.ntasks_per_node)]
    if s.container:
        cmd += ["--container", s.container]
    if dry_run:
        cmd.append("--dry-run")
    return cmd
