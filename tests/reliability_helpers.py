"""Building blocks of the reliability, fuzz and untrusted-input tests: tiny datasets built by the real
shard builder, subprocess runners that can be SIGKILLed at a random moment, invariant checks on what a
killed run leaves behind, and a way to make a folder run out of space."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from shardformat import read_index
from synthetic.videos import write_lavfi_video, write_numbered_video
from preprocess_helpers import read_samples

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


# ------------------------------------------------------------------------------------------------ inputs


def write_inputs(src: Path, *, videos: int = 5, broken: int = 2, frames: int = 20) -> int:
    """``videos`` tiny valid sources plus ``broken`` undecodable ones (garbage, empty). Returns the input count."""
    src.mkdir(parents=True, exist_ok=True)
    for i in range(videos):
        write_lavfi_video(src / f"clip{i:02d}.mp4", source="testsrc2", num_frames=frames + 2 * i, width=96, height=64)
    for i in range(broken):
        (src / f"broken{i}.mp4").write_bytes(b"" if i % 2 else random.Random(i).randbytes(3000))
    return videos + broken


def build_tiny_shards(root: Path, *, videos: dict[str, int] | None = None, shard_max_count: int = 2) -> Path:
    """Frame-numbered 96x64 VP9 shards (labels from folders, min_frames 8) under ``root/out``."""
    from preprocess import build_shards

    videos = videos or {"a/v0": 40, "a/v1": 48, "b/v2": 56, "b/v3": 64}
    src = root / "src"
    for name, frames in videos.items():
        write_numbered_video(src / f"{name}.mp4", num_frames=frames, width=96, height=64)
    build_shards(src, root / "out", labels_from_dirs=True, min_frames=8, workers=1, shard_max_count=shard_max_count, short_side=64,
                 progress=False)
    return root / "out"


# -------------------------------------------------------------------------------------------- processes


def start(args: list[str], *, env: dict | None = None, limit_fsize: int | None = None) -> subprocess.Popen:
    """``python ARGS`` from the repo root in its own session (so a kill can take its whole process group).
    ``limit_fsize``: RLIMIT_FSIZE in bytes (a write past it fails with EFBIG, like a full disk)."""

    def preexec() -> None:
        if limit_fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() instead of death by SIGXFSZ
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([PYTHON, *args], cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=preexec)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_staged(proc: subprocess.Popen, staged: Path, count: int, *, timeout: float = 120) -> int:
    """Block until ``count`` inputs of a running ``python -m preprocess`` have their outcome staged
    (``KEY.result.json`` in ``staged``) or the run has ended; returns how many are staged."""
    deadline = time.monotonic() + timeout
    while (done := len(list(staged.glob("*.result.json")))) < count and proc.poll() is None:
        assert time.monotonic() < deadline, f"no progress: {done} of {count} staged after {timeout} s"
        time.sleep(0.002)
    return done


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group (the job and its workers, as an OOM killer or a pre-emption would)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def run(args: list[str], *, timeout: float = 300, **kwargs) -> tuple[int, str]:
    proc = start(args, **kwargs)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise
    return proc.returncode, output.decode("utf-8", "replace")


def run_and_kill_at(args: list[str], delay_s: float) -> bool:
    """Start ``python ARGS`` and SIGKILL its group after ``delay_s`` seconds. True if it was killed while
    running (False: it finished first)."""
    proc = start(args)
    try:
        proc.wait(timeout=delay_s)
        proc.communicate()
        return False
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return True


# ------------------------------------------------------------------------------------------- invariants


def tar_samples(tar_path: Path) -> dict[str, dict[str, bytes]]:
    """key -> {ext: bytes} of one shard, read member by member (nothing is extracted to disk)."""
    return read_samples([tar_path])


def check_visible_shards(out: Path) -> dict[str, dict]:
    """Every ``.tar`` under a final name is a complete, readable tar whose ``.idx`` lists exactly its
    samples with the right byte ranges; returns key -> parsed json of all visible samples."""
    metas: dict[str, dict] = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        idx = tar.with_suffix(".idx")
        assert idx.is_file(), f"{tar.name} is visible without its index"
        samples = tar_samples(tar)
        index = read_index(idx)
        assert [s[0][3].split(".")[0] for s in index] == list(samples), f"{idx.name} disagrees with {tar.name}"
        data = tar.read_bytes()
        for sample in index:
            for ext, offset, size, name in sample:
                key = name.split(".")[0]
                assert data[offset:offset + size] == samples[key][ext], f"{idx.name}: wrong byte range for {name}"
        for key, members in samples.items():
            assert key not in metas, f"sample {key} appears in two shards"
            metas[key] = json.loads(members["json"])
    return metas


def check_manifest_matches_tars(out: Path, split: str = "train") -> dict:
    """The manifest's per-shard sample and frame counts are what the tars hold. Returns the split entry."""
    entry = json.loads((out / "manifest.json").read_text())["splits"][split]
    total_samples = total_frames = 0
    for shard in entry["shards"]:
        samples = tar_samples(out / shard["tar"])
        frames = sum(json.loads(m["json"])["frames"] for m in samples.values())
        assert (shard["samples"], shard["frames"]) == (len(samples), frames), shard
        assert shard["bytes"] == (out / shard["tar"]).stat().st_size
        total_samples, total_frames = total_samples + len(samples), total_frames + frames
    assert (entry["samples"], entry["frames"]) == (total_samples, total_frames)
    listed = {Path(s["tar"]).name for s in entry["shards"]}
    assert {p.name for p in (out / "shards").glob(f"{split}-*.tar")} == listed, "a shard on disk is not in the manifest"
    return entry


def decodable_frames(data: bytes) -> int:
    import av

    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


# ------------------------------------------------------------------------------------------ full disks


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str = "2m"):
    """A ``size`` tmpfs mounted at ``path`` (needs root and mount rights). Yields True if mounted,
    False if this sandbox does not allow it (then use RLIMIT_FSIZE via :func:`start`)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    mounted = proc.returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (default: this one), from /proc."""
    with open(f"/proc/{pid or 'self'}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
