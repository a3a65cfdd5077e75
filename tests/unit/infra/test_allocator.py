"""glibc mmap threshold: freed large blocks go back to the OS (measured on this process)."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from nemo_rence.config import ConfigError, RunConfig
from nemo_rence.infra.allocator import set_mmap_threshold

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only"
)

# In a fresh interpreter: allocate 64 blocks of 8 MiB with malloc, touch them, free every other
# one (a freed block between two live ones cannot be trimmed from the heap), and report how much
# of the 256 MiB freed stays resident.
_PROBE = r"""
import ctypes, sys
from nemo_rence.infra.allocator import set_mmap_threshold
if sys.argv[1] == "1":
    assert set_mmap_threshold(1 << 20)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
# glibc raises its dynamic threshold after freeing one mmapped block of that size
libc.free(libc.malloc(16 << 20))
blocks = [libc.malloc(8 << 20) for _ in range(64)]
for b in blocks:
    ctypes.memset(b, 1, 8 << 20)
before = rss()
for b in blocks[::2]:
    libc.free(b)
print(rss() - (before - 256 * 2**20))
"""


def _retained(fixed: bool) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "1" if fixed else "0"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return int(out.stdout.strip())


def test_a_fixed_threshold_returns_freed_blocks_to_the_os():
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    dynamic, fixed = _retained(False), _retained(True)
    assert dynamic > 192 << 20, dynamic  # glibc's default keeps the freed blocks resident
    assert fixed < 32 << 20, fixed


def test_bad_threshold_is_an_error():
    with pytest.raises(ValueError, match="> 0 bytes"):
        set_mmap_threshold(0)
    with pytest.raises(ConfigError, match=r"run\.malloc_mmap_threshold_mb"):
        RunConfig(malloc_mmap_threshold_mb=-1)
