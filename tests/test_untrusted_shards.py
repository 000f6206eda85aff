"""Shards from elsewhere are data, never instructions: hostile tars and index files are refused with a message
naming the shard (and key), nothing is ever written outside the run folder, and a member that declares a
huge size is refused before anything is read or allocated.

Both backends read shards through the same code (``pipeline.io.shard_reader``: the index reader, or a ``tarfile``
scan when a tar has no index, then ``SampleRecord.read``); the per-sample read is exercised through
``build_loader`` with each backend."""

from __future__ import annotations

import ast
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from reliability_helpers import REPO

from pipeline import BadSampleError, LoaderConfig, build_loader
from pipeline.io.shard_reader import scan_shards

CFG = LoaderConfig(mode="finetune", num_frames=4, batch_size=1, resize=32, crop_size=32, augment=False)


def _add(tar: tarfile.TarFile, name: str, data: bytes, **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def _tar(path: Path, members: list[tuple[str, bytes, dict]]) -> str:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, attrs in members:
            _add(tar, name, data, **attrs)
    return str(path)


def _sample(key: str, good: dict[str, bytes]) -> list[tuple[str, bytes, dict]]:
    return [(f"{key}.mp4", good["mp4"], {}), (f"{key}.json", good["json"], {}), (f"{key}.cls", good["cls"], {})]


def _scan_error(shard: str) -> BadSampleError:
    with pytest.raises(BadSampleError) as info:
        scan_shards([shard])
    return info.value


def test_a_valid_handmade_shard_loads(tmp_path, tiny_sample):
    """The control: the same members under ordinary names are accepted and decoded."""
    shard = _tar(tmp_path / "ok.tar", _sample("clip", tiny_sample))
    batches = list(build_loader([shard], CFG, backend="reference", num_workers=0))
    assert len(batches) == 1 and batches[0]["key"] == ["clip"]


@pytest.mark.parametrize("prefix", ["../", "../../escape/", "/abs/", "/"])
def test_member_names_with_dotdot_or_absolute_paths_are_rejected(tmp_path, tiny_sample, prefix):
    before = set(tmp_path.parent.rglob("*"))
    shard = _tar(tmp_path / "evil.tar", _sample(f"{prefix}clip", tiny_sample))
    error = _scan_error(shard)
    assert error.shard == shard and "unsafe member name" in error.reason
    assert str(tmp_path / "evil.tar") in str(error)
    assert set(tmp_path.parent.rglob("*")) - before == {tmp_path / "evil.tar"}  # nothing was written anywhere


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_symlink_and_hardlink_members_are_never_followed(tmp_path, tiny_sample, kind):
    """A link named like the video is not a video member: the sample is rejected, the target never read."""
    target = tmp_path / "secret.mp4"
    target.write_bytes(tiny_sample["mp4"])  # a real video: if the link were followed, the sample would load
    members = [("clip.mp4", b"", {"type": kind, "linkname": str(target)}), ("clip.json", tiny_sample["json"], {})]
    error = _scan_error(_tar(tmp_path / "links.tar", members))
    assert error.key == "clip" and "no video member" in error.reason


def _huge_member_tar(path: Path, good: dict[str, bytes], declared: int, *, ext: str) -> str:
    """A tar whose ``clip.EXT`` header declares ``declared`` bytes while the file holds a few KB."""
    with open(path, "wb") as f:
        for name, data in (("clip.json", good["json"]), ("clip.mp4", good["mp4"])):
            info = tarfile.TarInfo(name)
            info.size = declared if name.endswith(ext) else len(data)
            f.write(info.tobuf(tarfile.GNU_FORMAT))
            f.write(data + b"\0" * (-len(data) % 512))
    return str(path)


@pytest.mark.parametrize("ext", ["json", "mp4"])
def test_a_tar_member_declaring_many_gigabytes_is_refused_before_reading(tmp_path, tiny_sample, ext):
    shard = _huge_member_tar(tmp_path / "huge.tar", tiny_sample, 64 << 30, ext=ext)
    with pytest.raises((BadSampleError, ValueError)) as info:
        scan_shards([shard])
    assert shard in str(info.value)


def _index(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def _indexed_shard(tmp_path: Path, good: dict[str, bytes]) -> tuple[str, list[tuple[str, int, int]]]:
    """A valid tar ``s.tar`` of one sample and its members' (ext, offset, size)."""
    shard = _tar(tmp_path / "s.tar", _sample("clip", good))
    with tarfile.open(shard) as tar:
        ranges = [(m.name.split(".", 1)[1], m.offset_data, m.size) for m in tar]
    return shard, ranges


@pytest.mark.parametrize("backend", ["reference", "dali"])
def test_an_index_declaring_a_huge_video_member_is_refused_before_reading(tmp_path, tiny_sample, backend):
    """The index says the video is 1 TiB: reading it must be refused by comparing against the shard's
    size, not attempted (an allocation of the declared size would be a MemoryError, or worse)."""
    shard, ranges = _indexed_shard(tmp_path, tiny_sample)
    fields = [f"{ext} {off} {(1 << 40) if ext == 'mp4' else size} clip.{ext}" for ext, off, size in ranges]
    _index(tmp_path / "s.idx", ["v1.2 1", " ".join(fields)])
    loader = build_loader([shard], CFG, backend=backend, num_workers=0)
    with pytest.raises(BadSampleError) as info:  # a 1 TiB allocation attempt would be a MemoryError instead
        next(iter(loader))
    assert info.value.key == "clip" and "outside" in info.value.reason and info.value.shard == shard


@pytest.mark.parametrize("bad_range", ["-100 50", "0 -1", "99999999 10"])
def test_an_index_with_negative_or_out_of_file_ranges_is_refused(tmp_path, tiny_sample, bad_range):
    shard, ranges = _indexed_shard(tmp_path, tiny_sample)
    fields = [f"{ext} {bad_range if ext == 'json' else f'{off} {size}'} clip.{ext}" for ext, off, size in ranges]
    _index(tmp_path / "s.idx", ["v1.2 1", " ".join(fields)])
    error = _scan_error(shard)
    assert error.key == "clip" and "outside" in error.reason


@pytest.mark.parametrize("lines", [
    ["v1.2 1", "mp4 x 10 clip.mp4"],          # not a number
    ["garbage"],                               # no header
    [],                                        # empty index
    ["v9.0 1", "mp4 0 10 clip.mp4"],          # unknown version
])
def test_a_malformed_index_gives_an_error_naming_it(tmp_path, tiny_sample, lines):
    shard, _ = _indexed_shard(tmp_path, tiny_sample)
    _index(tmp_path / "s.idx", lines)
    with pytest.raises(ValueError) as info:
        scan_shards([shard])
    assert "s.idx" in str(info.value) or "s.tar" in str(info.value)


def test_a_file_that_is_not_a_tar_gives_an_error_naming_it(tmp_path):
    shard = tmp_path / "noise.tar"
    shard.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError) as info:
        scan_shards([str(shard)])
    assert "noise.tar" in str(info.value)


@pytest.mark.parametrize("json_bytes, reason", [
    (None, "missing KEY.json"),
    (b"{not json", "unparseable json"),
    (b"\xff\xfe\x00", "unparseable json"),
    (b"[1, 2]", "not an object"),
    (b'{"frames": -3, "width": 96, "height": 64}', "'frames' must be a positive int"),
    (b'{"frames": 1e309, "width": 96, "height": 64}', "'frames' must be a positive int"),
    (b'{"frames": true, "width": 96, "height": 64}', "'frames' must be a positive int"),
    (b'{"frames": 24, "width": "96", "height": 64}', "'width' must be a positive int"),
    (b'{"frames": 24, "width": 96, "height": 64, "label": -1}', "'label' must be"),
])
def test_missing_or_malformed_json_is_rejected_by_key(tmp_path, tiny_sample, json_bytes, reason):
    members = [("clip.mp4", tiny_sample["mp4"], {})] + ([("clip.json", json_bytes, {})] if json_bytes is not None else [])
    error = _scan_error(_tar(tmp_path / "s.tar", members))
    assert error.key == "clip" and reason in error.reason


def test_a_key_without_a_video_member_is_rejected(tmp_path, tiny_sample):
    members = [("clip.json", tiny_sample["json"], {}), ("clip.cls", tiny_sample["cls"], {}), ("clip.txt", b"hello", {})]
    error = _scan_error(_tar(tmp_path / "s.tar", members))
    assert error.key == "clip" and "no video member" in error.reason


def test_bad_samples_are_skipped_and_counted_when_asked(tmp_path, tiny_sample):
    """With skip_bad_samples the good sample still trains and each hostile one is listed by key."""
    members = _sample("good", tiny_sample) + [("../up.json", tiny_sample["json"], {}), ("../up.mp4", tiny_sample["mp4"], {}),
                                       ("nojson.mp4", tiny_sample["mp4"], {})]
    shard = _tar(tmp_path / "mixed.tar", members)
    cfg = LoaderConfig(**{**CFG.__dict__, "skip_bad_samples": True})
    loader = build_loader([shard], cfg, backend="reference", num_workers=0)
    assert [b["key"] for b in loader] == [["good"]]
    assert sorted(s["key"] for s in loader.stats["skipped_samples"]) == ["../up", "nojson"]


# -------------------------------------------------------------------------- nothing extracts archives


def _project_sources() -> list[Path]:
    skip = {".venv", ".git", "node_modules", "build", "dist"}
    return [p for p in REPO.rglob("*.py") if not skip.intersection(p.relative_to(REPO).parts)]


def test_no_project_code_extracts_archives_to_disk():
    """Shards are read member by member into memory; no code calls ``extractall``/``extract``/``unpack_archive``."""
    offenders = []
    for path in _project_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("extractall", "extract", "unpack_archive", "_extract_member"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.func.attr}")
    assert offenders == []


def test_the_loader_reads_no_tar_member_names_as_paths(tmp_path, tiny_sample):
    """Loading a shard whose names point outside its folder creates no file anywhere under the run's root."""
    (tmp_path / "run").mkdir()
    members = _sample("ok", tiny_sample) + [("../../pwned.json", b'{"frames": 24, "width": 96, "height": 64}', {}),
                                     ("../../pwned.mp4", tiny_sample["mp4"], {})]
    shard = _tar(tmp_path / "run" / "s.tar", members)
    before = {p for p in tmp_path.rglob("*")}
    cfg = LoaderConfig(**{**CFG.__dict__, "skip_bad_samples": True})
    assert [b["key"] for b in build_loader([shard], cfg, backend="reference", num_workers=0)] == [["ok"]]
    assert {p for p in tmp_path.rglob("*")} == before
    assert not (tmp_path.parent / "pwned.json").exists() and not (tmp_path / "pwned.json").exists()
    assert json.loads(tiny_sample["json"])["frames"] == 24


def test_an_oversized_json_member_is_refused_before_reading(tmp_path, tiny_sample):
    """Every json is read at start-up, so a shard of huge json members must not be read into memory."""
    from pipeline.io.shard_reader import MAX_JSON_BYTES

    blob = b'{"frames": 24, "width": 96, "height": 64, "pad": "' + b"x" * MAX_JSON_BYTES + b'"}'
    error = _scan_error(_tar(tmp_path / "s.tar", [("clip.mp4", tiny_sample["mp4"], {}), ("clip.json", blob, {})]))
    assert error.key == "clip" and "json member of" in error.reason and "limit" in error.reason
