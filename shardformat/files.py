"""Atomic file writes and advisory locks: every file of a shard set, a run's config, metrics history and
checkpoints is published this way, so a reader sees the old file or the complete new one, never a part."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (the folder's entry list is written to disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """The temporary name ``path`` is written under before its rename: hidden, in the same folder (so
    the rename is atomic), and tagged with the writer's pid and thread (so concurrent writers, processes or
    threads, do not collide)."""
    return path.with_name(f".{path.name}.tmp.{os.getpid()}.{threading.get_ident()}")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: on a normal exit it is flushed, fsynced and renamed over
    ``path`` (then the folder is fsynced); on an exception the temporary file is removed and ``path``
    is left as it was."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


class FileLockedError(RuntimeError):
    """A non-blocking :func:`locked` found the lock held by another process."""

    def __init__(self, path: Path):
        super().__init__(f"another process holds the lock {path}")
        self.path = path


@contextlib.contextmanager
def locked(path: Path, *, blocking: bool = True) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if absent). The kernel releases it when the process
    dies, so a killed run never leaves a stale lock. Non-blocking: raises :class:`FileLockedError`."""
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise FileLockedError(Path(path)) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
