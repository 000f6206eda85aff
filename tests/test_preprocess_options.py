"""build_shards options: codecs, segments, fps, determinism, splits and label maps, list inputs, reruns, real footage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from preprocess_helpers import (
    count_frames, crashing_task, dali_cpu_decode, decode_frames, ffprobe, is_cfr, keyframe_indices, read_samples, shard_keys,
)

from preprocess import PreprocessError, build_shards
from synthetic.videos import read_frame_index, sample_footage, write_lavfi_video, write_numbered_video

QUIET = {"progress": False, "workers": 2}


def _only_sample(result) -> tuple[str, dict[str, bytes]]:
    (key, sample), = read_samples(result.shards).items()
    return key, sample


@pytest.mark.parametrize("codec,ext,keyframes", [("h264", "mp4", "gop"), ("mjpeg", "avi", "all")])
def test_other_codecs(tmp_path, codec, ext, keyframes):
    write_numbered_video(tmp_path / "src/v.mp4", num_frames=40)
    result = build_shards(tmp_path / "src", tmp_path / "out", codec=codec, gop=8, **QUIET)
    key, sample = _only_sample(result)
    assert set(sample) == {ext, "json"}  # unlabelled: no .cls
    path = tmp_path / f"{key}.{ext}"
    path.write_bytes(sample[ext])
    stream, = ffprobe(path)["streams"]
    assert (stream["codec_name"], stream["pix_fmt"], stream["width"], stream["height"]) == (codec, "yuv420p", 176, 128)
    assert is_cfr(stream) and count_frames(path) == 40
    assert keyframe_indices(path) == (list(range(0, 40, 8)) if keyframes == "gop" else list(range(40)))
    info = json.loads(sample["json"])
    assert (info["codec"], info["gop"], info["label"], info["label_name"]) == (codec, 8 if codec == "h264" else 1, None, None)
    assert [read_frame_index(f) for f in decode_frames(path)] == list(range(40))
    from torchcodec.decoders import VideoDecoder

    frames = VideoDecoder(str(path)).get_frames_at([37, 3, 20]).data  # (N, C, H, W)
    assert [read_frame_index(f.permute(1, 2, 0).numpy()) for f in frames] == [37, 3, 20]
    if codec == "mjpeg":  # DALI's CPU decoder reads MJPEG (not H.264, see docs/design.md §3)
        assert [read_frame_index(f) for f in dali_cpu_decode(sample[ext])] == list(range(40))


def test_max_frames_splits_into_balanced_segments(tmp_path):
    write_numbered_video(tmp_path / "src/long.mp4", num_frames=100)
    write_numbered_video(tmp_path / "src/short.mp4", num_frames=30)
    result = build_shards(tmp_path / "src", tmp_path / "out", max_frames=40, min_frames=16, **QUIET)
    assert (result.written, result.videos_written, result.inputs) == (4, 2, 2)
    samples = read_samples(result.shards)
    infos = {key: json.loads(s["json"]) for key, s in samples.items()}
    long_parts = sorted((i["segment_start"], i["frames"], i["segment_index"], k) for k, i in infos.items() if i["source"] == "long.mp4")
    assert [(start, frames, index) for start, frames, index, _ in long_parts] == [(0, 33, 0), (33, 33, 1), (66, 34, 2)]
    (video_id,) = {infos[k]["video_id"] for *_, k in long_parts}
    assert [k for *_, k in long_parts] == [f"{video_id}_s{start:06d}" for start in (0, 33, 66)]
    for start, frames, _, key in long_parts:
        path = tmp_path / f"{key}.mp4"
        path.write_bytes(samples[key]["mp4"])
        assert count_frames(path) == frames == infos[key]["frames"]
        assert [read_frame_index(f) for f in decode_frames(path)] == list(range(start, start + frames))
        assert keyframe_indices(path) == list(range(0, frames, 16))
    (short_key,) = [k for k, i in infos.items() if i["source"] == "short.mp4"]
    assert short_key.endswith("_s000000") and infos[short_key]["frames"] == 30 and infos[short_key]["num_segments"] == 1


def test_fps_resamples_to_constant_rate(tmp_path):
    write_numbered_video(tmp_path / "src/v.mp4", num_frames=50, fps=25)
    result = build_shards(tmp_path / "src", tmp_path / "out", fps=12.5, short_side=64, **QUIET)
    key, sample = _only_sample(result)
    path = tmp_path / "v.mp4"
    path.write_bytes(sample["mp4"])
    stream, = ffprobe(path)["streams"]
    assert stream["r_frame_rate"] == "25/2" and is_cfr(stream) and (stream["width"], stream["height"]) == (88, 64)
    indices = [read_frame_index(f) for f in decode_frames(path)]
    assert len(indices) == 25 and indices == sorted(indices) and indices[-1] >= 47  # every other frame, whole span


def _small_corpus(root: Path, count: int = 7) -> Path:
    for i in range(count):
        write_lavfi_video(root / f"v{i}.mp4", source="testsrc2" if i % 2 else "rgbtestsrc", num_frames=16 + 2 * i, width=96 + 16 * i, height=64)
    return root


def test_sharding_is_deterministic_across_worker_counts(tmp_path):
    src = _small_corpus(tmp_path / "src")
    one = build_shards(src, tmp_path / "w1", workers=1, shard_max_count=3, seed=7, progress=False)
    two = build_shards(src, tmp_path / "w2", workers=2, shard_max_count=3, seed=7, progress=False)
    assert len(one.shards) == 3 and [p.name for p in one.shards] == [p.name for p in two.shards]
    assert shard_keys(one.shards) == shard_keys(two.shards)
    assert [p.read_bytes() for p in one.shards] == [p.read_bytes() for p in two.shards]  # byte-identical shards
    assert [p.with_suffix(".idx").read_text() for p in one.shards] == [p.with_suffix(".idx").read_text() for p in two.shards]
    other_seed = build_shards(src, tmp_path / "s8", workers=2, shard_max_count=3, seed=8, progress=False)
    assert shard_keys(other_seed.shards) != shard_keys(one.shards)
    assert set(shard_keys(other_seed.shards)) == set(shard_keys(one.shards))


def test_shard_byte_bound(tmp_path):
    src = _small_corpus(tmp_path / "src", count=5)
    alone = build_shards(src, tmp_path / "out", shard_max_bytes=1, **QUIET)  # every sample exceeds it: one per shard
    assert len(alone.shards) == 5 and all(len(read_samples([p])) == 1 for p in alone.shards)
    bound = sum(p.stat().st_size for p in alone.shards) // 2
    result = build_shards(src, tmp_path / "out2", shard_max_bytes=bound, **QUIET)
    counts = [len(read_samples([p])) for p in result.shards]
    assert len(counts) >= 2 and max(counts) >= 2 and sum(counts) == 5
    assert all(p.stat().st_size <= bound for p in result.shards)


def test_splits_share_and_extend_one_label_map(tmp_path):
    for rel in ["train/cat/a.mp4", "train/dog/b.mp4", "test/dog/c.mp4", "test/emu/d.mp4"]:
        write_lavfi_video(tmp_path / rel, num_frames=16)
    out = tmp_path / "out"
    train = build_shards(tmp_path / "train", out, split="train", labels_from_dirs=True, **QUIET)
    test = build_shards(tmp_path / "test", out, split="test", labels_from_dirs=True, **QUIET)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["label_map"] == {"cat": 0, "dog": 1, "emu": 2}
    assert set(manifest["splits"]) == {"train", "test"}
    assert [p.name for p in train.shards] == ["train-000000.tar"] and [p.name for p in test.shards] == ["test-000000.tar"]
    labels = {json.loads(s["json"])["label_name"]: int(s["cls"]) for s in read_samples(test.shards).values()}
    assert labels == {"dog": 1, "emu": 2}


def test_forced_label_map_and_rejects_per_split(tmp_path):
    for rel in ["src/cat/a.mp4", "src/dog/b.mp4", "src/yak/c.mp4"]:
        write_lavfi_video(tmp_path / rel, num_frames=16)
    (tmp_path / "src/dog/empty.mp4").write_bytes(b"")
    out = tmp_path / "out"
    result = build_shards(tmp_path / "src", out, labels_from_dirs=True, label_map={"cat": 5, "dog": 7}, **QUIET)
    labels = {json.loads(s["json"])["label_name"]: int(s["cls"]) for s in read_samples(result.shards).values()}
    assert labels == {"cat": 5, "dog": 7}
    assert sorted((r["path"], r["reason"].split(":")[0]) for r in result.rejected) == [
        ("dog/empty.mp4", "empty file"), ("yak/c.mp4", "label 'yak' is not in the given label map")]
    val = build_shards(tmp_path / "src/cat", out, split="val", **QUIET)
    assert val.written == 1 and not val.rejected
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rejects} == {"train"} and len(rejects) == 2
    with pytest.raises(PreprocessError, match="conflicts"):
        build_shards(tmp_path / "src", out, split="other", label_map={"cat": 6}, **QUIET)


def test_list_file_input(tmp_path):
    write_lavfi_video(tmp_path / "videos/a.mp4", num_frames=16)
    write_lavfi_video(tmp_path / "videos/b c.mp4", num_frames=16)
    (tmp_path / "list.csv").write_text("path,label\nvideos/a.mp4,walk\n\"videos/b c.mp4\",run\nvideos/missing.mp4,run\nvideos/a.mp4,walk\n")
    result = build_shards(tmp_path / "list.csv", tmp_path / "out", **QUIET)
    assert (result.inputs, result.written) == (4, 2)
    assert sorted((r["path"], r["reason"]) for r in result.rejected) == [
        ("videos/a.mp4", "duplicate entry in the input list"), ("videos/missing.mp4", "file not found")]
    infos = {json.loads(s["json"])["source"]: json.loads(s["json"]) for s in read_samples(result.shards).values()}
    assert {k: (v["label_name"], v["label"]) for k, v in infos.items()} == {"videos/a.mp4": ("walk", 1), "videos/b c.mp4": ("run", 0)}


def test_rerun_of_finished_split_is_a_no_op_and_new_params_are_refused(tmp_path):
    src = _small_corpus(tmp_path / "src", count=2)
    first = build_shards(src, tmp_path / "out", **QUIET)
    stamps = [p.stat().st_mtime_ns for p in first.shards]
    again = build_shards(src, tmp_path / "out", **QUIET)
    assert again.already_complete and again.shards == first.shards and again.written == first.written
    assert [p.stat().st_mtime_ns for p in again.shards] == stamps
    with pytest.raises(PreprocessError, match="different parameters"):
        build_shards(src, tmp_path / "out", gop=8, **QUIET)
    write_lavfi_video(src / "new.mp4", num_frames=16)
    with pytest.raises(PreprocessError, match="different set of inputs"):
        build_shards(src, tmp_path / "out", **QUIET)


def test_crash_while_packing_resumes_without_rewriting_finished_shards(tmp_path, monkeypatch):
    import preprocess.pack as pack

    src = _small_corpus(tmp_path / "src", count=6)
    reference = build_shards(src, tmp_path / "ref", shard_max_count=2, **QUIET)
    real_write, calls = pack.write_shard, []

    def crash_on_second(*args, **kwargs):
        calls.append(args[0].name)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pack, "write_shard", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_shards(src, tmp_path / "out", shard_max_count=2, **QUIET)
    first_shard = tmp_path / "out/shards/train-000000.tar"
    assert first_shard.is_file() and not (tmp_path / "out/manifest.json").exists()
    stamp = first_shard.stat().st_mtime_ns
    calls.clear()
    monkeypatch.setattr(pack, "write_shard", real_write)
    result = build_shards(src, tmp_path / "out", shard_max_count=2, **QUIET)
    assert first_shard.stat().st_mtime_ns == stamp  # kept, not rewritten
    assert [p.read_bytes() for p in result.shards] == [p.read_bytes() for p in reference.shards]


@pytest.mark.slow
def test_real_footage(tmp_path):
    footage = sample_footage()
    src = tmp_path / "src"
    src.mkdir()
    for name in ("bigbuckbunny", "bikes"):
        (src / f"{name}.mp4").symlink_to(footage[name])
    result = build_shards(src, tmp_path / "out", **QUIET)
    assert (result.written, result.rejected) == (2, [])
    infos = {json.loads(s["json"])["source"]: json.loads(s["json"]) for s in read_samples(result.shards).values()}
    # 1280x720 -> 228x128, 640x272 -> 302x128; every source frame kept (constant 25 fps sources)
    assert {k: (v["width"], v["height"], v["frames"], v["fps"]) for k, v in infos.items()} == {
        "bigbuckbunny.mp4": (228, 128, 132, 25.0), "bikes.mp4": (302, 128, 250, 25.0)}


def test_resume_over_a_changed_input_set_drops_stale_shards(tmp_path, monkeypatch):
    import preprocess.pack as pack

    src = _small_corpus(tmp_path / "src", count=4)
    real_write = pack.write_shard
    written: list[str] = []

    def crash_on_third(tar_path, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt("simulated crash")
        written.append(tar_path.name)
        return real_write(tar_path, *args, **kwargs)

    monkeypatch.setattr(pack, "write_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_shards(src, tmp_path / "out", shard_max_count=1, **QUIET)
    assert len(list((tmp_path / "out/shards").glob("*.tar"))) == 2
    monkeypatch.setattr(pack, "write_shard", real_write)
    for path in sorted(src.iterdir())[1:]:
        path.unlink()
    result = build_shards(src, tmp_path / "out", shard_max_count=1, **QUIET)
    assert (result.inputs, result.written) == (1, 1)
    assert sorted(p.name for p in (tmp_path / "out/shards").iterdir()) == ["train-000000.idx", "train-000000.tar"]
    assert [json.loads(s["json"])["source"] for s in read_samples(result.shards).values()] == ["v0.mp4"]


def test_a_worker_crash_rejects_only_the_file_that_caused_it(tmp_path, monkeypatch):
    import preprocess.pool as pool

    src = _small_corpus(tmp_path / "src", count=5)
    write_lavfi_video(src / "crash.mp4", num_frames=16)
    monkeypatch.setattr(pool, "_transcode_task", crashing_task)
    result = build_shards(src, tmp_path / "out", workers=2, progress=False)
    assert (result.inputs, result.written) == (6, 5)
    assert [(r["path"], r["reason"].split(" (")[0], r["stage"]) for r in result.rejected] == [
        ("crash.mp4", "worker process crashed on this file", "transcode")]


def test_a_second_run_of_the_same_split_is_refused_while_one_runs(tmp_path):
    import fcntl

    write_lavfi_video(tmp_path / "src/a.mp4", num_frames=16)
    (tmp_path / "out/.staging").mkdir(parents=True)
    with open(tmp_path / "out/.staging/train.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running build of split "train" holds
        with pytest.raises(PreprocessError, match="another preprocess run"):
            build_shards(tmp_path / "src", tmp_path / "out", **QUIET)
