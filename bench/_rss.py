"""Peak resident memory of a benchmark side: its own high-water mark and its descendants'.

Standard library only: imported by both benchmark workers, one of them under TRL's interpreter.
"""

from __future__ import annotations

import os
import resource
from collections import defaultdict

GIB = 2**30


def descendants_hwm_bytes() -> int:
    """Sum of the peak RSS (VmHWM) of this process's live descendants (grader workers)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(entry))
    total, todo = 0, list(children[os.getpid()])
    while todo:
        pid = todo.pop()
        todo.extend(children[pid])
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:"))
        except (OSError, StopIteration):
            pass
    return total


def maxrss_bytes() -> int:
    """This process's peak RSS: ``VmHWM`` (per address space, so not the parent's peak that
    ``ru_maxrss`` carries across ``exec``); ``ru_maxrss`` where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
