"""Keep a publish's big transient buffers out of the heap, so that they do not set its peak RSS.

A publish of many files builds a few large buffers once each: the BSON of the staged entries,
the BSON of the commit's documents (30 MB for 50,000 files), the JSON it reads. glibc serves an
allocation of 128 KiB or more with ``mmap`` and gives it back on ``free``, but only until the first
such block is freed: from then on its dynamic threshold rises to that block's size (up to 32 MB),
later big buffers come from the heap, and the heap keeps them after they are freed, beside the
small objects around them. In a 50,000-file publish that was about 40 MB of the peak RSS
(measured with ``ru_maxrss``: 204 MB, and 165 MB with the threshold fixed; docs/performance.md).

Fixing the threshold with ``mallopt(M_MMAP_THRESHOLD)`` turns the dynamic adjustment off. The
cost is an ``mmap`` and ``munmap`` per big buffer, a few per publish: the copy threads reuse
their buffers. A threshold the environment already sets (``MALLOC_MMAP_THRESHOLD_``) is left
alone, and so is every C library but glibc.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold for this process; True when it was set. Call before the threads start."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: another allocator
            return False
        return libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(THRESHOLD)) == 1
    except (OSError, AttributeError):
        return False
