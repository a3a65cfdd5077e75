"""slurm/train.sbatch and slurm/submit.sh without a cluster: SLURM's commands replaced by stubs
that record their arguments, so the script's own logic (rendezvous, container flags, run dir,
entry command) runs for real."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run_sbatch(tmp_path: Path, extra_env: dict[str, str], args: list[str]) -> tuple[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "srun.args"
    _stub(
        bin_dir, "scontrol", 'if [ "$1 $2" = "show hostnames" ]; then echo node-a; echo node-b; fi'
    )
    _stub(bin_dir, "srun", f'printf "%s\\0" "$@" > {record}')
    _stub(bin_dir, "scancel", "exit 0")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "node-[a-b]",
        "SLURM_NTASKS": "16",
        "RUN_DIR": str(tmp_path / "run"),
        **extra_env,
    }
    proc = subprocess.run(
        ["bash", str(REPO / "slurm" / "train.sbatch"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return record.read_text(), proc.stdout


def test_sbatch_uses_pyxis_flags_when_a_container_is_given(tmp_path: Path) -> None:
    srun, out = _run_sbatch(
        tmp_path,
        {"NR_CONTAINER_IMAGE": "/images/nemo-rence.sqsh", "NR_CONTAINER_MOUNTS": "/data:/data"},
        ["+recipes=rence-qwen3-8b-2n8g-tp2"],
    )
    run_dir = tmp_path / "run"
    args = srun.split("\0")[:-1]
    assert "--container-image=/images/nemo-rence.sqsh" in args
    assert f"--container-mounts={run_dir}:{run_dir},/data:/data" in args
    assert "--kill-on-bad-exit=1" in args
    # the trainer command and its run dir come after the per-task env wrapper
    tail = args[args.index("task") + 1 :]
    assert tail == [
        "nemo-rence",
        "train",
        "+recipes=rence-qwen3-8b-2n8g-tp2",
        f"run.out_dir={run_dir}",
    ]
    wrapper = args[args.index("task") - 1]
    for export in ("RANK=$SLURM_PROCID", "WORLD_SIZE=$SLURM_NTASKS", "LOCAL_RANK=$SLURM_LOCALID"):
        assert export in wrapper
    assert "master=node-a:24242" in out  # first host of the node list; 20000 + job id % 20000
    assert (run_dir / "logs").is_dir() and (run_dir / "checkpoints").is_dir()


def test_sbatch_runs_bare_metal_without_a_container(tmp_path: Path) -> None:
    srun, _ = _run_sbatch(
        tmp_path, {"NR_ENTRY": "python -m nemo_rence.infra.dist_check"}, ["--steps", "2"]
    )
    args = srun.split("\0")[:-1]
    assert not any(a.startswith("--container") for a in args)
    assert args[args.index("task") + 1 :] == [
        "python",
        "-m",
        "nemo_rence.infra.dist_check",
        "--steps",
        "2",
    ]


def test_submit_dry_run_requests_gpus_and_the_run_dir(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            "bash",
            str(REPO / "slurm" / "submit.sh"),
            "--run-dir",
            str(tmp_path / "r"),
            "--nodes",
            "2",
            "--container",
            "nvcr.io#nvidia/pytorch:25.05-py3",
            "--dry-run",
            "--",
            "algorithm=grpo",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    cmd = proc.stdout
    for part in (
        "--nodes=2",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--time=04:00:00",
        f"--output={tmp_path / 'r'}/logs/slurm-%j.out",
        "train.sbatch",
        "algorithm=grpo",
    ):
        assert part in cmd, (part, cmd)
    assert "sbatch" in (tmp_path / "r" / "job.env").read_text()
