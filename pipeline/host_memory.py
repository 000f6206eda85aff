"""Keep freed host memory in the process, so large batch buffers are reused instead of faulted in anew.

A batch of normalized clips is tens of megabytes (pretext, batch 4: 38 MB of float32). glibc's malloc hands
blocks that large out with ``mmap`` and returns them with ``munmap``, so every batch starts on fresh pages
and the first write to each 4 KiB page is a page fault: converting a 2.4 MB uint8 sample into a fresh
9.6 MB float32 slot took 7.3 ms against 1.0 ms into memory already touched (one thread, this project's
2-core machine). In the reference loader this conversion runs in the training process for every sample,
so it capped how far worker processes could scale. Raising malloc's mmap threshold (and its trim threshold
with it) makes such blocks come from the heap and stay there once freed: the next batch reuses the same
pages. The price is that the process keeps its peak batch memory mapped, as PyTorch's CUDA and pinned-memory
caching allocators do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap (glibc refuses values above its own cap; see below).
MMAP_THRESHOLD = 1 << 30
#: glibc's documented cap on 64-bit systems (4 * 1024 * 1024 * sizeof(long)), used when the above is refused.
MMAP_THRESHOLD_CAP = 32 << 20

_applied: int | None = None


def keep_freed_memory() -> int | None:
    """Make this process's large allocations reusable (see the module docstring); idempotent.

    Returns the mmap threshold now in force in bytes, or None where it cannot be set (not glibc); says which
    in the log either way."""
    global _applied
    if _applied is not None:
        return _applied
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        log.info("host memory: no glibc mallopt here (%s); large batch buffers are faulted in per batch", name)
        return None
    for threshold in (MMAP_THRESHOLD, MMAP_THRESHOLD_CAP):
        if mallopt(_M_MMAP_THRESHOLD, threshold) == 1:
            mallopt(_M_TRIM_THRESHOLD, min(2 * threshold, 2**31 - 1))  # an int in C
            _applied = threshold
            log.info("host memory: blocks up to %d MiB are reused from the heap once freed (malloc mmap threshold)", threshold >> 20)
            return threshold
    log.info("host memory: malloc refused an mmap threshold of %d MiB; large batch buffers are faulted in per batch", MMAP_THRESHOLD_CAP >> 20)
    return None
