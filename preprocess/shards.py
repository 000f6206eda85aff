"""WebDataset tars with DALI index files, written atomically; the deterministic sample-to-shard plan.

Index format (what DALI's ``wds2idx`` writes and ``fn.readers.webdataset(index_paths=...)`` reads):
a first line ``v1.2 <number of samples>``, then one line per sample listing each member as
``<ext> <data offset in bytes> <size in bytes> <member name>``, separated by spaces. The offset is
that of the member's data (after its 512-byte tar header).
"""

from __future__ import annotations

import io
import os
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

INDEX_VERSION = "v1.2"
_TAR_BLOCK = 512


@dataclass(frozen=True)
class Member:
    """One file of a sample: ``KEY.<ext>`` with its bytes (or the path holding them)."""

    ext: str
    data: bytes | None = None
    path: Path | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size


@dataclass(frozen=True)
class PackItem:
    """A sample as the planner sees it."""

    key: str
    nbytes: int
    """Size of the sample's members, used for the shard byte bound."""


def tar_bytes(member_sizes: Sequence[int]) -> int:
    """Bytes a sample takes in a tar: a header block per member plus its data padded to 512."""
    return sum(_TAR_BLOCK + -(-size // _TAR_BLOCK) * _TAR_BLOCK for size in member_sizes)


def tar_file_bytes(content_bytes: int) -> int:
    """Size of a tar holding ``content_bytes`` of headers and data: Python's tarfile ends it with two
    zero blocks and pads it to a multiple of its 10240-byte record."""
    return -(-(content_bytes + 2 * _TAR_BLOCK) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def plan_shards(items: Sequence[PackItem], *, seed: int, max_count: int, max_bytes: int) -> list[list[str]]:
    """Shuffle samples (seeded, from key order, so worker count and completion order do not matter)
    and cut them into consecutive shards of at most ``max_count`` samples whose tar files take at
    most ``max_bytes`` bytes (a single sample larger than that gets a shard of its own)."""
    if max_count < 1 or max_bytes < 1:
        raise ValueError("shard bounds must be positive")
    order = sorted(items, key=lambda item: item.key)
    random.Random(seed).shuffle(order)
    shards: list[list[str]] = []
    count = size = 0
    for item in order:
        if not shards or count >= max_count or (count and tar_file_bytes(size + item.nbytes) > max_bytes):
            shards.append([])
            count = size = 0
        shards[-1].append(item.key)
        count += 1
        size += item.nbytes
    return shards


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``path`` so that it is either absent/old or complete: temp name, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _fsync_write(tmp, data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_shard(tar_path: Path, idx_path: Path, samples: Sequence[tuple[str, Sequence[Member]]]) -> int:
    """Write one tar (members in the given order, deterministic headers) and its DALI index.

    Both go to temporary names first. A stale tar of the same name is removed before anything else,
    then the index is renamed into place, then the tar: whenever a ``.tar`` is visible, the ``.idx``
    beside it describes it. Returns the tar's size in bytes.
    """
    tar_path.unlink(missing_ok=True)
    tmp_tar = tar_path.with_name(f".{tar_path.name}.tmp{os.getpid()}")
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    with open(tmp_tar, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, members in samples:
                fields = []
                for member in members:
                    name = f"{key}.{member.ext}"
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = member.size, 0, 0o444
                    info.uname = info.gname = ""
                    start = tar.offset
                    if member.data is not None:
                        tar.addfile(info, io.BytesIO(member.data))
                    else:
                        with open(member.path, "rb") as src:
                            tar.addfile(info, src)
                    header = tar.offset - start - -(-info.size // _TAR_BLOCK) * _TAR_BLOCK
                    fields.append(f"{member.ext} {start + header} {info.size} {name}")
                lines.append(" ".join(fields))
        f.flush()
        os.fsync(f.fileno())
    atomic_write(idx_path, "\n".join(lines) + "\n")
    os.replace(tmp_tar, tar_path)
    fsync_dir(tar_path.parent)
    return tar_path.stat().st_size


def read_index(idx_path: Path) -> list[list[tuple[str, int, int, str]]]:
    """Parse a DALI index: per sample, its members as ``(ext, offset, size, name)``."""
    lines = idx_path.read_text().splitlines()
    version, count = lines[0].split()
    if version != INDEX_VERSION or int(count) != len(lines) - 1:
        raise ValueError(f"{idx_path}: not a {INDEX_VERSION} index with {count} samples")
    samples = []
    for line in lines[1:]:
        fields = line.split(" ")
        samples.append([(fields[i], int(fields[i + 1]), int(fields[i + 2]), fields[i + 3]) for i in range(0, len(fields), 4)])
    return samples
