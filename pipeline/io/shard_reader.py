"""Reading the shards (docs/design.md §1): where every sample's members sit in the tars, its metadata, its bytes.

Both backends read samples by random access: the DALI index file beside each tar (parsed by
:func:`shardformat.read_index`) gives every member's byte range, so the loader can shuffle globally, give every rank exactly its share and name
the shard and key of anything that goes wrong. A tar without an index is scanned once with ``tarfile``.
At build time each sample's ``KEY.json`` is read (one small read per sample): the sampler needs the frame
count before decoding, and samples too short for the mode must be counted before the epoch is split
between ranks.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import av

from pipeline.io.remote import RemoteOptions, RemoteReadError, is_url
from pipeline.io.remote import read as read_remote
from pipeline.io.remote_shards import list_remote_shards, read_jsons, read_remote_index
from shardformat import VIDEO_EXTS, index_path, read_index, sample_json_problem, split_member_name, split_tars

log = logging.getLogger(__name__)

#: A KEY.json is a few hundred bytes; a bigger one is refused before it is read (every json is read at start-up).
MAX_JSON_BYTES = 1 << 20


class BadSampleError(RuntimeError):
    """A sample that cannot be used, named by shard and key."""

    def __init__(self, shard: str, key: str, reason: str):
        super().__init__(f"bad sample {key!r} in shard {shard}: {reason}")
        self.shard, self.key, self.reason = shard, key, reason

    def __reduce__(self):  # survives the trip back from DataLoader worker processes
        return (BadSampleError, (self.shard, self.key, self.reason))


@dataclass(frozen=True)
class SampleRecord:
    """One sample of a shard: where its members are and what its json says."""

    shard: str
    key: str
    members: dict = field(hash=False, compare=False)
    """ext -> (offset, size) in bytes within the tar."""
    meta: dict = field(hash=False, compare=False)
    """The validated ``KEY.json``."""
    remote: RemoteOptions | None = field(default=None, hash=False, compare=False)
    """How to read ``shard`` when it is a URL (see ``remote.py``); None for a local file."""

    @property
    def video_frames(self) -> int:
        """N, the video's exact frame count (``KEY.json`` ``frames``)."""
        return self.meta["frames"]

    @property
    def label(self) -> int:
        return -1 if self.meta.get("label") is None else int(self.meta["label"])

    @property
    def video_id(self) -> str:
        return str(self.meta.get("video_id") or self.key)

    @property
    def video_ext(self) -> str:
        return next(ext for ext in VIDEO_EXTS if ext in self.members)

    def read(self, ext: str) -> bytes:
        offset, size = self.members[ext]
        if self.remote is not None:
            try:
                return read_remote(self.shard, self.remote, offset, size)
            except RemoteReadError as e:
                raise BadSampleError(self.shard, self.key, f"{ext} member: {e}") from None
        with open(self.shard, "rb") as f:
            self._check_range(ext, f.fileno())  # before allocating the declared size
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise BadSampleError(self.shard, self.key, f"{ext} member truncated: {len(data)} of {size} bytes")
        return data

    def read_video(self) -> bytes:
        return self.read(self.video_ext)

    def open_video(self) -> "MemberFile | io.BytesIO":
        """The video member as a seekable binary file that reads from the shard only what is asked for
        (a decoder seeking by the container's index then never reads the rest). Close it after use.
        A URL shard's member is fetched whole in one ranged request (many small remote reads cost more)."""
        if self.remote is not None:
            return io.BytesIO(self.read_video())
        offset, size = self.members[self.video_ext]
        f = MemberFile(self.shard, offset, size)
        try:
            self._check_range(self.video_ext, f.fileno())
            if size == 0:
                raise BadSampleError(self.shard, self.key, "empty video member")
        except BadSampleError:
            f.close()
            raise
        return f

    def _check_range(self, ext: str, fd: int) -> None:
        """The index's byte range for ``ext`` lies inside the shard file open as ``fd``."""
        offset, size = self.members[ext]
        end = os.fstat(fd).st_size
        if offset < 0 or size < 0 or offset + size > end:
            raise BadSampleError(self.shard, self.key, f"{ext} member (offset {offset}, {size} bytes) lies outside the {end}-byte shard")


class MemberFile(io.RawIOBase):
    """Bytes ``[offset, offset + size)`` of the file ``path`` as a read-only, seekable file of ``size``
    bytes (positioned reads: nothing outside the window is read). ``bytes_read`` counts what was read."""

    def __init__(self, path: str, offset: int, size: int):
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._offset, self._size, self._pos = offset, size, 0
        self.bytes_read = 0

    def fileno(self) -> int:
        return self._fd

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + pos < 0:
            raise OSError(f"seek to {base + pos} before the start of the member")
        self._pos = base + pos
        return self._pos

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        data = os.pread(self._fd, count, self._offset + self._pos) if count else b""
        buffer[: len(data)] = data
        self._pos += len(data)
        self.bytes_read += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def list_shards(out_dir_or_paths, split: str = "train", *, remote: RemoteOptions | None = None) -> list[str]:
    """Tar paths of a split: from ``OUT/manifest.json`` (``splits[split].shards[*].tar``), else the
    ``OUT/shards/{split}-*.tar`` files, or the given tar path(s) as they are. URLs are accepted too: a
    ``.tar`` URL is a shard, any other URL an OUT folder, which must hold its ``manifest.json``."""
    if isinstance(out_dir_or_paths, (str, Path)):
        out_dir_or_paths = [out_dir_or_paths]
    if any(is_url(p) for p in out_dir_or_paths):
        paths = [str(p) for p in out_dir_or_paths]
        tars = list_remote_shards(paths, split, remote or RemoteOptions())
        missing = [p for p in tars if not is_url(p) and not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"shard not found: {missing[0]}")
        return tars
    paths = [Path(p) for p in out_dir_or_paths]
    if len(paths) == 1 and paths[0].is_dir():
        out = paths[0]
        listed = split_tars(out, split)
        if listed is not None:
            tars = [str(p) for p in listed]
        else:
            tars = [str(p) for p in sorted((out / "shards").glob(f"{split}-*.tar")) or sorted(out.glob(f"{split}-*.tar"))]
        if not tars:
            raise FileNotFoundError(f"no {split!r} shards under {out}")
    else:
        tars = [str(p) for p in paths]
    missing = [t for t in tars if not Path(t).is_file()]
    if missing:
        raise FileNotFoundError(f"shard not found: {missing[0]}")
    return tars


def _members_from_index(idx_path: Path) -> list[tuple[str, dict]]:
    """(key, {ext: (offset, size)}) per sample of a DALI index."""
    return _keyed(read_index(idx_path))


def _keyed(index) -> list[tuple[str, dict]]:
    """(key, {ext: (offset, size)}) per sample of a parsed index."""
    samples = []
    for members in index:
        key = (split_member_name(members[-1].name) or (members[-1].name, ""))[0]
        samples.append((key, {m.ext: (m.offset, m.size) for m in members}))
    return samples


def _members_from_tar(tar_path: Path) -> list[tuple[str, dict]]:
    samples: list[tuple[str, dict]] = []
    with tarfile.open(tar_path) as tar:
        for info in tar:
            if not info.isreg():
                continue
            parts = split_member_name(info.name)
            if parts is None:
                continue
            key, ext = parts
            if not samples or samples[-1][0] != key:
                samples.append((key, {}))
            samples[-1][1][ext] = (info.offset_data, info.size)
    return samples


def _record(shard: str, key: str, members: dict, remote: RemoteOptions | None = None, json_bytes=None) -> SampleRecord:
    if key.startswith("/") or ".." in key.split("/"):
        raise BadSampleError(shard, key, "unsafe member name (absolute path or '..')")
    if "json" not in members:
        raise BadSampleError(shard, key, "missing KEY.json")
    if not any(ext in members for ext in VIDEO_EXTS):
        raise BadSampleError(shard, key, f"no video member (one of {', '.join(VIDEO_EXTS)}), has {sorted(members)}")
    if members["json"][1] > MAX_JSON_BYTES:
        raise BadSampleError(shard, key, f"json member of {members['json'][1]} bytes (limit {MAX_JSON_BYTES})")
    record = SampleRecord(shard, key, members, {}, remote)
    if isinstance(json_bytes, RemoteReadError):
        raise BadSampleError(shard, key, f"json member: {json_bytes}")
    try:
        meta = json.loads(record.read("json") if json_bytes is None else json_bytes)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadSampleError(shard, key, f"unparseable json: {e}") from None
    reason = sample_json_problem(meta)
    if reason:
        raise BadSampleError(shard, key, reason)
    return SampleRecord(shard, key, members, meta, remote)


def scan_shards(shards: list[str], *, skip_bad_samples: bool = False,
                remote: RemoteOptions | None = None) -> tuple[list[SampleRecord], list[BadSampleError]]:
    """Every sample of ``shards`` with its metadata, sorted by key. Samples with a missing or invalid json
    raise :class:`BadSampleError`, or are returned in the second list when ``skip_bad_samples``.
    URL shards are read with ``remote`` (default options when None): their index is fetched once and
    their jsons by concurrent byte-range reads; a URL shard without an index file is refused."""
    records, bad = [], []
    for shard in shards:
        jsons: dict = {}
        if is_url(shard):
            shard_remote = remote or RemoteOptions()
            entries = _keyed(read_remote_index(shard, shard_remote))
            jsons = read_jsons(shard, shard_remote, entries, MAX_JSON_BYTES)
        else:
            shard_remote = None
            idx = index_path(shard)
            try:
                entries = _members_from_index(idx) if idx.is_file() else _members_from_tar(Path(shard))
            except (ValueError, tarfile.TarError) as e:
                raise ValueError(f"unreadable shard {shard} ({idx.name if idx.is_file() else 'tar scan'}): {type(e).__name__}: {e}") from None
        for key, members in entries:
            try:
                records.append(_record(shard, key, members, shard_remote, jsons.get(key)))
            except BadSampleError as e:
                if not skip_bad_samples:
                    raise
                log.warning("skipping %s", e)
                bad.append(e)
    records.sort(key=lambda r: (r.key, r.shard))
    return records, bad


@contextlib.contextmanager
def video_stream(record: SampleRecord, data: bytes):
    """``(container, stream)``: ``data`` opened by PyAV and its first video stream. Empty bytes, no video
    stream, and any PyAV error inside the block become a :class:`BadSampleError` naming the shard and key."""
    if not data:
        raise BadSampleError(record.shard, record.key, "empty video member")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise BadSampleError(record.shard, record.key, "no video stream in the container")
            yield container, container.streams.video[0]
    except BadSampleError:
        raise
    except Exception as e:  # noqa: BLE001 -- PyAV raises many types for bad bytes; all mean the same here
        raise BadSampleError(record.shard, record.key, f"unreadable video container: {type(e).__name__}: {e}") from None


def check_stream(record: SampleRecord, *, codec: str, width: int, height: int, declared_frames: int | None) -> None:
    """The video stream matches the json: codec, size, and at least as many frames as the json claims."""
    meta = record.meta
    if isinstance(meta.get("codec"), str) and meta["codec"] != codec:
        raise BadSampleError(record.shard, record.key, f"video codec is {codec}, json says {meta['codec']}")
    if (width, height) != (meta["width"], meta["height"]):
        raise BadSampleError(record.shard, record.key, f"video is {width}x{height}, json says {meta['width']}x{meta['height']}")
    if declared_frames and declared_frames < meta["frames"]:
        raise BadSampleError(record.shard, record.key, f"json says {meta['frames']} frames, the video holds {declared_frames}")
