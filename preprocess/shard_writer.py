"""Packing: WebDataset tars with their DALI index files (format: :mod:`shardformat.index`), written
atomically, and the deterministic sample-to-shard plan."""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shardformat import IndexMember, atomic_file, atomic_write, format_index, member_name

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


def write_shard(tar_path: Path, idx_path: Path, samples: Sequence[tuple[str, Sequence[Member]]]) -> int:
    """Write one tar (members in the given order, deterministic headers) and its DALI index.

    Both go to temporary names first. A stale tar of the same name is removed before anything else,
    then the index is renamed into place, then the tar: whenever a ``.tar`` is visible, the ``.idx``
    beside it describes it. Returns the tar's size in bytes.
    """
    tar_path.unlink(missing_ok=True)
    index: list[list[IndexMember]] = []
    with atomic_file(tar_path) as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, members in samples:
                index.append([])
                for member in members:
                    name = member_name(key, member.ext)
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
                    index[-1].append(IndexMember(member.ext, start + header, info.size, name))
        atomic_write(idx_path, format_index(index))  # before the tar's rename, which leaving this block does
    return tar_path.stat().st_size
