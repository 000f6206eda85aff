"""Preprocessing beyond one process pool: ``--partition I/N`` + ``--merge`` (the same samples, labels and frame
counts as one run) and ``--executor ray`` (byte-identical shards to a local run, also when a Ray worker
process is killed mid-run)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from pipeline.io.shard_reader import list_shards, scan_shards
from preprocess import build_shards
from preprocess.cli import main as preprocess_main
from preprocess.build import PreprocessError
from preprocess.partition import in_partition, parse_partition
from synthetic.videos import write_numbered_video

#: class folder -> [(name, frames)]; one input too short (rejected) so the rejects are merged too.
VIDEOS = {"walk": [("a", 24), ("b", 30), ("c", 20), ("short", 6)], "run": [("d", 26), ("e", 22), ("f", 28)], "jump": [("g", 24)]}
OPTIONS = dict(labels_from_dirs=True, short_side=64, min_frames=8, shard_max_count=2, seed=3, progress=False)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale_src")
    for label, videos in VIDEOS.items():
        for name, frames in videos:
            write_numbered_video(root / label / f"{name}.mp4", num_frames=frames, vcodec="libx264")
    return root


@pytest.fixture(scope="module")
def single(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("scale_single") / "out"
    build_shards(src, out, workers=2, **OPTIONS)
    return out


def samples(out: Path) -> dict:
    """key -> (label, label_name, frames, source) of every sample of OUT's train split."""
    return {r.key: (r.meta["label"], r.meta["label_name"], r.video_frames, r.meta["source"]) for r in scan_shards(list_shards(out))[0]}


def test_partition_specs_and_scheduler_environments():
    assert parse_partition("2/5") == (2, 5)
    assert parse_partition("auto", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}) == (3, 4)
    assert parse_partition("auto", {"JOB_COMPLETION_INDEX": "0", "JOB_COMPLETIONS": "8"}) == (0, 8)
    assert parse_partition("auto", {"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    for bad, env, message in [("5/5", {}, "0 <= I < N"), ("1-of-2", {}, "I/N"), ("auto", {}, "none of"),
                              ("auto", {"JOB_COMPLETION_INDEX": "1"}, "JOB_COMPLETIONS"), ("auto", {"RANK": "x", "WORLD_SIZE": "2"}, "not an integer")]:
        with pytest.raises(PreprocessError, match=message):
            parse_partition(bad, env)
    keys = [f"{i:016x}" for i in range(0, 10**6, 7919)]
    owners = [[p for p in range(3) if in_partition(k, (p, 3))] for k in keys]
    assert all(len(o) == 1 for o in owners) and {o[0] for o in owners} == {0, 1, 2}  # disjoint, covering


N_PARTS = 3


@pytest.fixture(scope="module")
def partitioned(src, tmp_path_factory):
    """OUT with N_PARTS partitions built by the CLI, one after the other, not yet merged."""
    from preprocess.partition import merge_partitions

    out = tmp_path_factory.mktemp("scale_parts") / "out"
    for i in range(N_PARTS):
        code = preprocess_main([str(src), str(out), "--partition", f"{i}/{N_PARTS}", "--labels-from-dirs", "--short-side", "64",
                                "--min-frames", "8", "--shard-max-count", "2", "--seed", "3", "--workers", "2", "--no-progress"])
        assert code in (0, 1)  # 1: this partition wrote nothing (possible with 8 inputs); the merge still counts it
        if i == 0:  # not all partitions there yet: the merge refuses and names what is missing
            with pytest.raises(PreprocessError, match=rf"partitions \[1, 2\] of {N_PARTS} are missing"):
                merge_partitions(out, "train")
    return out


def test_partitions_then_merge_equal_one_run(partitioned, single, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(partitioned, out)
    parts = [json.loads((out / "parts" / f"{i}-of-{N_PARTS}" / "manifest.json").read_text()) for i in range(N_PARTS)]
    assert all(p["label_map"] == parts[0]["label_map"] for p in parts)  # every partition derived the global map
    assert sum(p["splits"]["train"]["inputs"] for p in parts) == sum(len(v) for v in VIDEOS.values())

    assert preprocess_main(["--merge", str(out)]) == 0
    merged, one = json.loads((out / "manifest.json").read_text()), json.loads((single / "manifest.json").read_text())
    assert merged["label_map"] == one["label_map"]
    for name in ("samples", "videos", "inputs", "rejected", "frames"):
        assert merged["splits"]["train"][name] == one["splits"]["train"][name], name
    assert merged["splits"]["train"]["partitions"] == N_PARTS
    assert samples(out) == samples(single)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rejects] == ["walk/short.mp4"]


@pytest.mark.parametrize("damage,message", [
    ("unfinished", r"partition 1/3 has no complete split 'train'"),
    ("other_seed", r"partition 1/3 differs from partition 0 in its params"),
    ("other_labels", r"partition 1/3 differs from partition 0 in its label map"),
    ("lost_shard", r"partition 1/3: shards/train-000000.tar is missing"),
])
def test_merge_refuses_incomplete_or_inconsistent_partitions(partitioned, tmp_path, damage, message):
    from preprocess.partition import merge_partitions

    out = tmp_path / "out"
    shutil.copytree(partitioned, out)
    part = out / "parts" / f"1-of-{N_PARTS}"
    manifest = json.loads((part / "manifest.json").read_text())
    if damage == "unfinished":
        del manifest["splits"]["train"]
    elif damage == "other_seed":
        manifest["splits"]["train"]["params"]["seed"] = 4
    elif damage == "other_labels":
        manifest["label_map"] = {name: 9 - value for name, value in manifest["label_map"].items()}
    (part / "manifest.json").write_text(json.dumps(manifest))
    if damage == "lost_shard":
        (part / "shards" / "train-000000.tar").unlink()
    with pytest.raises(PreprocessError, match=message):
        merge_partitions(out, "train")
    assert not (out / "manifest.json").exists()


# ------------------------------------------------------------------------------------------------ Ray
def _ray_task_pids() -> list[int]:
    """Ray worker processes currently running a transcode task (Ray titles them after the task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ray::_transcode_on_worker" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed (the `ray` extra; `make setup` installs it)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_executor_gives_byte_identical_shards_despite_a_killed_worker(src, single, ray_cluster, tmp_path):
    killed = []

    def kill_one_worker():  # SIGKILL the first Ray worker seen transcoding: Ray must retry its task
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for pid in _ray_task_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    out = tmp_path / "out"
    result = build_shards(src, out, executor="ray", **OPTIONS)
    killer.join()
    assert killed, "no Ray worker was seen running a task"
    assert result.rejected == [{"path": "walk/short.mp4", "reason": result.rejected[0]["reason"], "stage": result.rejected[0]["stage"]}]
    names = sorted(p.name for p in (single / "shards").iterdir())
    assert names == sorted(p.name for p in (out / "shards").iterdir())
    for name in names:
        assert (out / "shards" / name).read_bytes() == (single / "shards" / name).read_bytes(), name
    ours, theirs = (json.loads((o / "manifest.json").read_text()) for o in (out, single))
    assert ours["label_map"] == theirs["label_map"]
    assert ours["splits"]["train"]["shards"] == theirs["splits"]["train"]["shards"]
    assert (out / "rejects.jsonl").read_text() == (single / "rejects.jsonl").read_text()
