"""A real multi-process torch.distributed job that follows the trainer's launch contract.

It is what ``slurm/train.sbatch`` runs in CI before (and beside) ``nemo-rence train``: each task
initialises the default process group from the environment the launcher sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; gloo on CPU, NCCL on GPU),
all-reduces, and then plays the trainer's part of the preemption protocol:

* ``--steps`` iterations, each an all-reduce plus ``--step-seconds`` of sleep, one line per step
  in ``<out>/metrics.jsonl`` (rank 0);
* SIGUSR1 or SIGTERM sets a flag; at the next step boundary the ranks agree on it (all-reduce of
  the flag), rank 0 writes a checkpoint atomically (``checkpoints/iter-NNNNNN.tmp`` renamed to
  ``checkpoints/iter-NNNNNN``, then the ``checkpoints/latest`` file, written to a temp file and
  renamed, names it) and every rank exits 0;
* at start, when ``checkpoints/latest`` exists, it resumes from the step stored there.

At the end rank 0 writes ``<out>/dist_check.json`` (world size, the all-reduced sum, hostnames,
the step it resumed from, SLURM's restart count). Usage::

    RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 \\
        python -m nemo_rence.infra.dist_check --out runs/check --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["latest_checkpoint", "main", "write_checkpoint"]

_stop_requested = False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _stop_requested
    _stop_requested = True
    print(f"rank {os.environ.get('RANK')}: got signal {signum}", flush=True)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The checkpoint directory ``ckpt_dir/latest`` names, or None."""
    pointer = ckpt_dir / "latest"
    if not pointer.is_file():
        return None
    target = ckpt_dir / pointer.read_text().strip()
    return target if target.is_dir() else None


def write_checkpoint(ckpt_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``iter-<step>/state.json`` atomically, then update ``latest``."""
    name = f"iter-{step:06d}"
    tmp = ckpt_dir / f"{name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "state.json").write_text(json.dumps(state))
    final = ckpt_dir / name
    if final.exists():
        for f in final.iterdir():
            f.unlink()
        final.rmdir()
    tmp.rename(final)
    pointer_tmp = ckpt_dir / "latest.tmp"
    pointer_tmp.write_text(name + "\n")
    os.replace(pointer_tmp, ckpt_dir / "latest")
    return final


def main(argv: list[str] | None = None) -> int:
    """The check script: its checks run in order on one page (long on purpose: each step is a
    few lines and logs one CHECK line)."""
    ap = argparse.ArgumentParser(prog="python -m nemo_rence.infra.dist_check", description=__doc__)
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--step-seconds", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=120.0, help="process-group timeout (s)")
    args = ap.parse_args(argv)

    import torch
    import torch.distributed as dist

    signal.signal(signal.SIGUSR1, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        print(f"dist_check: the launcher did not set {missing}", file=sys.stderr)
        return 2
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if on_gpu else "gloo", timeout=timedelta(seconds=args.timeout))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda") if on_gpu else torch.device("cpu")
    out = Path(args.out)
    ckpt_dir = out / "checkpoints"
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()

    x = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(x)
    expected = world * (world + 1) / 2
    if float(x) != expected:
        print(f"dist_check: all-reduce gave {float(x)}, expected {expected}", file=sys.stderr)
        return 1
    hosts: list[Any] = [None] * world
    dist.all_gather_object(hosts, socket.gethostname())

    start, resumed_from = 0, None
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None:
        resumed_from = int(json.loads((latest / "state.json").read_text())["step"])
        start = resumed_from
        if rank == 0:
            print(f"RESUMED from step {resumed_from} ({latest.name})", flush=True)

    preempted_at = None
    step = start
    while step < args.steps:
        flag = torch.tensor([1.0 if _stop_requested else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if float(flag) > 0:
            preempted_at = step
            break
        y = torch.ones(1, device=device)
        dist.all_reduce(y)
        step += 1
        if rank == 0:
            with (out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps({"step": step, "world_size": world, "sum": float(y)}) + "\n")
        if args.step_seconds:
            time.sleep(args.step_seconds)

    if preempted_at is not None:
        if rank == 0:
            path = write_checkpoint(ckpt_dir, preempted_at, {"step": preempted_at})
            print(f"PREEMPTED at step {preempted_at}: checkpoint {path}", flush=True)
        dist.barrier()
        dist.destroy_process_group()
        return 0

    if rank == 0:
        write_checkpoint(ckpt_dir, step, {"step": step})
        report = {
            "world_size": world,
            "allreduce_sum": float(x),
            "hosts": hosts,
            "steps": step,
            "resumed_from": resumed_from,
            "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        }
        (out / "dist_check.json").write_text(json.dumps(report, indent=1))
        print(f"DIST_CHECK OK world_size={world} steps={step}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
