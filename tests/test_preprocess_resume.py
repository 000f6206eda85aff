"""Kill `python -m preprocess` with SIGKILL mid-run, rerun the same command: same shards as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from preprocess_helpers import read_samples
from reliability_helpers import group_alive, wait_until_staged

from preprocess import build_shards
from shardformat import read_index
from synthetic.videos import write_lavfi_video

ARGS = ["--workers", "2", "--shard-max-count", "3", "--seed", "3", "--no-progress"]


def _start(src: Path, out: Path) -> subprocess.Popen:
    # Own session, so the kill takes the pool workers and their ffmpeg children too (like an OOM kill of the job).
    return subprocess.Popen([sys.executable, "-m", "preprocess", str(src), str(out), *ARGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _kill_when(proc: subprocess.Popen, staged: Path, results: int, *, whole_group: bool) -> None:
    if wait_until_staged(proc, staged, results) < results:
        raise AssertionError(f"run finished before it could be killed: {proc.stderr.read().decode()}")
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:  # only the builder: its workers and their ffmpeg processes must not outlive it
        proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(proc.pid), "processes outlived the killed builder"


def _visible_shards_are_complete(out: Path) -> None:
    """Whatever a reader could see after a crash is whole: each .tar has its .idx and they agree."""
    for tar in (out / "shards").glob("*.tar"):
        members = {name for sample in read_index(tar.with_suffix(".idx")) for (_ext, _off, _size, name) in sample}
        assert set(read_samples([tar])) == {m.split(".")[0] for m in members}


@pytest.mark.slow
def test_sigkill_and_rerun_gives_the_uninterrupted_result(tmp_path):
    src = tmp_path / "src"
    for i in range(12):
        write_lavfi_video(src / f"clip {i:02d}.mp4", source="testsrc2", num_frames=24 + i, width=176, height=128)
    (src / "broken.mp4").write_bytes(b"\x00" * 1000)
    reference = build_shards(src, tmp_path / "ref", workers=2, shard_max_count=3, seed=3, progress=False)

    out = tmp_path / "out"
    staged = out / ".staging" / "train"
    for kill_after, whole_group in ((3, False), (8, True)):  # kill twice, the second time during the resumed run
        proc = _start(src, out)
        _kill_when(proc, staged, kill_after, whole_group=whole_group)
        assert not (out / "manifest.json").exists() or "train" not in json.loads((out / "manifest.json").read_text())["splits"]
        _visible_shards_are_complete(out)

    final = _start(src, out)
    assert final.wait(timeout=300) == 0, final.stderr.read().decode()

    assert [p.name for p in (out / "shards").glob("*.tar")] and not staged.exists()
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(p.name for p in (tmp_path / "ref/shards").iterdir())
    for tar in reference.shards:  # same samples, same shards, same bytes: no duplicate, no missing sample
        assert (out / "shards" / tar.name).read_bytes() == tar.read_bytes()
        assert (out / "shards" / tar.with_suffix(".idx").name).read_text() == tar.with_suffix(".idx").read_text()
    manifest = json.loads((out / "manifest.json").read_text())["splits"]["train"]
    assert (manifest["samples"], manifest["rejected"], manifest["inputs"]) == (12, 1, 13)
    assert [json.loads(line)["path"] for line in (out / "rejects.jsonl").read_text().splitlines()] == ["broken.mp4"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
