"""glibc heap settings for CPU training: give freed activation memory back to the OS.

glibc serves large requests from its heap arenas with a *dynamic* mmap threshold: after a big
block is freed, the threshold rises to its size, so the next activations of that size are carved
from the heap, and a heap is only trimmed from its top. A training step's activations (hundreds
of MiB, freed at the end of every micro-batch) therefore stay in the process as resident memory
that the optimizer state or the next rollout batch cannot reuse in place. Fixing the threshold
(``mallopt(M_MMAP_THRESHOLD, n)``, the same as ``MALLOC_MMAP_THRESHOLD_=n`` in the environment)
serves every block of at least ``n`` bytes with its own mmap, unmapped on free.

Measured on SmolLM2-135M, one ReNCE iteration of 64 rollouts (``bench/trl_compare.py``): peak
RSS 6.66 GiB -> 4.82 GiB with a 1 MiB threshold. The price is time: generation allocates and
frees large buffers at every decode step, each now an mmap + munmap + page faults; the embedded
default's first iteration took 445 s instead of ~330 s. Hence off by default
(``run.malloc_mmap_threshold_mb=0``): a switch for runs that are short of memory, not of time.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["set_mmap_threshold"]

M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter number of the mmap threshold in glibc's ``malloc.h``."""


def set_mmap_threshold(n_bytes: int) -> bool:
    """Serve heap blocks of at least ``n_bytes`` with mmap (returned to the OS when freed).

    Returns True when glibc accepted it; False on other platforms or C libraries (musl, macOS),
    where the call is skipped: they return large blocks to the OS already or have no such knob.
    """
    if n_bytes <= 0:
        raise ValueError(f"the mmap threshold must be > 0 bytes, got {n_bytes}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(n_bytes)) == 1)
