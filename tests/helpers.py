"""Helpers for tests: run a worker script under torchrun (2 processes, gloo on CPU)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(script: str | Path, *args: str, nproc: int = 2, timeout: float = 600) -> str:
    """Run ``script`` with ``torchrun --nproc_per_node nproc`` and return its combined output.

    Fails the calling test with the full output when any rank exits non-zero or the run takes
    longer than ``timeout`` seconds.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(script),
        *args,
    ]
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(
            f"torchrun {script} failed with exit {proc.returncode}:\n{out[-8000:]}"
        )
    return out
