"""Ctrl-C in ``preprocess``: one line that says a rerun resumes, no traceback, and the rerun gives exactly the
uninterrupted result; a complete build leaves no lock files behind."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from reliability_helpers import check_manifest_matches_tars, group_alive, start, wait_until_staged, write_inputs

from preprocess import build_shards

CLI = ["--workers", "2", "--shard-max-count", "2", "--seed", "1", "--short-side", "64", "--min-frames", "8", "--no-progress"]
OPTIONS = dict(shard_max_count=2, seed=1, short_side=64, min_frames=8)
VALID, BROKEN = 5, 2


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    src = tmp_path_factory.mktemp("inputs") / "src"
    assert write_inputs(src, videos=VALID, broken=BROKEN) == VALID + BROKEN
    return src


def _interrupt(proc: subprocess.Popen, times: int = 1) -> str:
    """Send SIGINT to the whole process group, as a terminal's Ctrl-C does, ``times`` times (0.3 s apart)."""
    for i in range(times):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        if i + 1 < times:
            try:
                proc.wait(timeout=0.3)
            except subprocess.TimeoutExpired:
                pass
    out, _ = proc.communicate(timeout=120)
    return out.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_is_one_line_and_the_rerun_gives_the_exact_result(src, tmp_path, presses):
    reference = tmp_path / "ref"
    build_shards(src, reference, workers=1, progress=False, **OPTIONS)
    out = tmp_path / "out"
    proc = start(["-m", "preprocess", str(src), str(out), *CLI])
    wait_until_staged(proc, out / ".staging" / "train", 1)
    log = _interrupt(proc, presses)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt reached it")  # the machine was faster than the test
    assert proc.returncode == 130, log
    assert "Traceback" not in log, log
    assert "rerun the same command to resume" in log.splitlines()[-1]
    assert not group_alive(proc.pid) or proc.poll() is not None
    assert not (out / "manifest.json").exists() or "train" not in (out / "manifest.json").read_text()

    proc = start(["-m", "preprocess", str(src), str(out), *CLI])
    rerun_log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, rerun_log
    entry = check_manifest_matches_tars(out)
    assert (entry["videos"], entry["rejected"]) == (VALID, BROKEN)  # no transcode cut by Ctrl-C counted as rejected
    names = sorted(p.name for p in (reference / "shards").iterdir())
    assert sorted(p.name for p in (out / "shards").iterdir()) == names
    for name in names:
        assert (out / "shards" / name).read_bytes() == (reference / "shards" / name).read_bytes(), name


def test_a_complete_build_leaves_no_lock_or_staging_files(src, tmp_path):
    out = tmp_path / "out"
    build_shards(src, out, split="train", workers=1, progress=False, **OPTIONS)
    assert not (out / ".staging").exists()
    build_shards(src, out, split="train", workers=1, progress=False, **OPTIONS)  # already complete: nothing left either
    assert not (out / ".staging").exists()
    assert sorted(p.name for p in out.iterdir()) == [".manifest.lock", "manifest.json", "rejects.jsonl", "shards"]
