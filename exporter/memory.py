"""Resident memory of this process: the peak so far and the current size, in MiB; and giving freed memory back.

The peak is ``getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux, bytes on macOS): the most this process has
held at any time, so a phase run in its own process reports its own peak. The current size comes from
psutil when installed, else ``/proc/self/statm``; ``None`` where neither exists.
"""

from __future__ import annotations

import gc
import os
import sys

MIB = 1024 * 1024


def peak_rss_mb() -> float:
    """The largest resident set this process has had, in MiB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float | None:
    """The resident set of this process now, in MiB (None when it cannot be read)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / MIB
    except ImportError:
        pass
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, IndexError):
        return None


def release() -> None:
    """Collect garbage and ask the C allocator to hand free pages back to the OS (glibc ``malloc_trim``),
    so what a freed model held does not stay resident under the next one."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
