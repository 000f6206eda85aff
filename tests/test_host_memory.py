"""``pipeline/host_memory.py``: malloc tuning that keeps freed batch buffers for reuse."""

from __future__ import annotations

import pytest


def test_host_memory_keeps_large_freed_blocks_on_glibc():
    """The loader's process keeps freed batch buffers for reuse (malloc's mmap threshold raised, or glibc's
    cap where the larger value is refused); the call is idempotent."""
    import platform

    from pipeline.host_memory import MMAP_THRESHOLD, MMAP_THRESHOLD_CAP, keep_freed_memory

    first = keep_freed_memory()
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert first in (MMAP_THRESHOLD, MMAP_THRESHOLD_CAP) and keep_freed_memory() == first
