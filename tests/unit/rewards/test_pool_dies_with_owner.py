"""Grader workers, their fork server and the resource tracker die with the pool's owner, even when
it is killed with SIGKILL while they cannot react (stopped with SIGSTOP: only the kernel's parent
death signal reaches them then)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, alive, descendants

OWNER = """
import sys, time
from nemo_rence.rewards.pool import GraderPool
if __name__ == "__main__":
    pool = GraderPool(num_workers=2, timeout_s=5.0, context=sys.argv[1]).start()
    assert pool.score_batch([r"\\boxed{4}", "x"], ["4", "4"])[0].reward == 1.0
    print("ready", flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("context", ["forkserver", "spawn"])
def test_sigkilled_owner_leaves_no_grader_process_behind(tmp_path, context):
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    owner = subprocess.Popen(
        [sys.executable, str(script), context], env=env, stdout=subprocess.PIPE, text=True
    )
    children: list[int] = []
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        children = descendants(owner.pid)
        assert len(children) >= 3, children  # two workers, the resource tracker (+ fork server)
        tracker = [p for p in children if b"resource_tracker" in _cmdline(p)]
        for pid in children:  # frozen: no pipe EOF or watchdog can end them, only the kernel
            if pid not in tracker:
                os.kill(pid, signal.SIGSTOP)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
        deadline = time.monotonic() + 20
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = {p: _cmdline(p)[:80] for p in alive(children)}
        assert not survivors, survivors
    finally:
        owner.kill()
        for pid in alive(children):
            os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")
    except OSError:
        return b""
