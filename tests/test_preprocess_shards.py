"""preprocess.shard_writer on its own: the shard plan, tar sizes, index format, write ordering under a crash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from preprocess_helpers import read_samples

from preprocess.shard_writer import Member, PackItem, plan_shards, tar_bytes, tar_file_bytes, write_shard
import shardformat.files
from shardformat import read_index


def _samples(prefix: str, count: int, size: int = 700) -> list[tuple[str, list[Member]]]:
    return [(f"{prefix}{i:04d}", [Member("mp4", data=bytes([i % 256]) * (size + i)), Member("json", data=b'{"frames": 16}\n'),
                                  Member("cls", data=str(i % 3).encode())]) for i in range(count)]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 50_000), min_size=1, max_size=40), seed=st.integers(0, 2**31),
       max_count=st.integers(1, 10), max_bytes=st.integers(1, 200_000))
def test_plan_covers_every_sample_once_within_bounds(sizes, seed, max_count, max_bytes):
    items = [PackItem(f"k{i:03d}", n) for i, n in enumerate(sizes)]
    plan = plan_shards(items, seed=seed, max_count=max_count, max_bytes=max_bytes)
    assert sorted(k for shard in plan for k in shard) == sorted(i.key for i in items)
    size_of = {i.key: i.nbytes for i in items}
    for shard in plan:
        assert 1 <= len(shard) <= max_count
        assert len(shard) == 1 or tar_file_bytes(sum(size_of[k] for k in shard)) <= max_bytes
    assert plan == plan_shards(list(reversed(items)), seed=seed, max_count=max_count, max_bytes=max_bytes)  # input order


def test_planned_sizes_are_the_written_sizes(tmp_path):
    samples = _samples("a", 7)
    size = write_shard(tmp_path / "s.tar", tmp_path / "s.idx", samples)
    assert size == tar_file_bytes(sum(tar_bytes([m.size for m in members]) for _, members in samples))


def test_index_is_what_dali_wds2idx_writes(tmp_path):
    samples = _samples("b", 5)
    write_shard(tmp_path / "s.tar", tmp_path / "s.idx", samples)
    reference = tmp_path / "ref.idx"
    subprocess.run([str(Path(sys.executable).parent / "wds2idx"), str(tmp_path / "s.tar"), str(reference)], check=True, capture_output=True)
    assert (tmp_path / "s.idx").read_text() == reference.read_text()
    data = (tmp_path / "s.tar").read_bytes()
    for (key, members), entry in zip(samples, read_index(tmp_path / "s.idx")):
        for member, (ext, offset, size, name) in zip(members, entry):
            assert (ext, name) == (member.ext, f"{key}.{member.ext}") and data[offset:offset + size] == member.data


def test_a_crash_between_index_and_tar_never_leaves_a_mismatched_pair(tmp_path, monkeypatch):
    tar, idx = tmp_path / "s.tar", tmp_path / "s.idx"
    write_shard(tar, idx, _samples("old", 3))
    real_replace = os.replace

    def crash_on_tar(src, dst):
        if str(dst).endswith(".tar"):
            raise KeyboardInterrupt("killed between the index and the tar")
        real_replace(src, dst)

    monkeypatch.setattr(shardformat.files.os, "replace", crash_on_tar)
    with pytest.raises(KeyboardInterrupt):
        write_shard(tar, idx, _samples("new", 4))
    assert not tar.exists()  # the old tar is gone: no reader sees it beside the new index
    assert [entry[0][3].split(".")[0] for entry in read_index(idx)] == [f"new{i:04d}" for i in range(4)]
    monkeypatch.setattr(shardformat.files.os, "replace", real_replace)
    write_shard(tar, idx, _samples("new", 4))
    assert sorted(read_samples([tar])) == [f"new{i:04d}" for i in range(4)]
