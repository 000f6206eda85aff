"""build_shards on a corpus of good and bad inputs: accounting, rejects, stored streams, shard readers."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from preprocess_helpers import (
    BAD, GOOD, count_frames, decode_frames, ffprobe, is_cfr, keyframe_indices, make_corpus, read_samples,
)

from preprocess import build_shards
from preprocess.inputs import fingerprint, list_folder
from synthetic.videos import read_frame_index



@pytest.fixture(scope="module")
def built(tmp_path_factory):
    src = make_corpus(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("out")
    result = build_shards(src, out, labels_from_dirs=True, workers=2, shard_max_count=3, progress=False)
    samples = read_samples(result.shards)
    infos = {key: json.loads(s["json"]) for key, s in samples.items()}
    by_source = {info["source"]: key for key, info in infos.items()}
    return {"src": src, "out": out, "result": result, "samples": samples, "infos": infos, "by_source": by_source}


def _stored(built, tmp_path, rel: str) -> Path:
    key = built["by_source"][rel]
    path = tmp_path / f"{key}.mp4"
    path.write_bytes(built["samples"][key]["mp4"])
    return path


def test_every_input_is_accounted_for(built):
    result = built["result"]
    assert result.inputs == len(GOOD) + len(BAD)  # sidecars (.txt, .json) and hidden files are not inputs
    assert result.written == result.videos_written == len(GOOD)
    assert result.written + len(result.rejected) == result.inputs
    assert {r["path"] for r in result.rejected} == set(BAD)
    assert set(built["by_source"]) == set(GOOD)
    lines = [json.loads(line) for line in (built["out"] / "rejects.jsonl").read_text().splitlines()]
    assert sorted(lines, key=lambda r: r["path"]) == sorted(({**r, "split": "train"} for r in result.rejected), key=lambda r: r["path"])


@pytest.mark.parametrize("rel", sorted(BAD))
def test_reject_reason(built, rel):
    (reason, stage), = [(r["reason"], r["stage"]) for r in built["result"].rejected if r["path"] == rel]
    assert reason.startswith(BAD[rel][0]), reason
    assert stage == BAD[rel][1]
    assert "\n" not in reason


@pytest.mark.parametrize("rel", sorted(GOOD))
def test_stored_stream_properties(built, tmp_path, rel):
    path = _stored(built, tmp_path, rel)
    info = built["infos"][built["by_source"][rel]]
    probe = ffprobe(path)
    assert [s["codec_type"] for s in probe["streams"]] == ["video"]  # no audio
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["pix_fmt"]) == ("vp9", "yuv420p")
    assert is_cfr(stream)
    assert not stream.get("side_data_list") and "rotate" not in stream.get("tags", {})
    width, height = stream["width"], stream["height"]
    assert (width, height) == (info["width"], info["height"])
    assert min(width, height) == 128 and width % 2 == 0 and height % 2 == 0
    src_w, src_h = GOOD[rel][2]
    assert (width >= height) == (src_w >= src_h)  # rotation applied: portrait stays portrait
    assert abs(max(width, height) - max(src_w, src_h) * 128 / min(src_w, src_h)) <= 2
    frames = count_frames(path)
    assert info["frames"] == frames
    if GOOD[rel][0] is not None:
        assert frames == GOOD[rel][0]
    assert keyframe_indices(path) == list(range(0, frames, 16))  # closed GOP of 16


def test_sample_json_and_labels(built):
    manifest = json.loads((built["out"] / "manifest.json").read_text())
    assert manifest["label_map"] == {"cat": 0, "dog": 1}
    for key, info in built["infos"].items():
        sample = built["samples"][key]
        assert set(sample) == {"mp4", "json", "cls"}
        assert info["label_name"] == info["source"].split("/")[0]
        assert info["label"] == manifest["label_map"][info["label_name"]] == int(sample["cls"].decode("ascii"))
        assert info["video_id"] == key and "." not in key and len(key) == 16
        assert (info["codec"], info["gop"], info["segment_start"], info["segment_index"]) == ("vp9", 16, 0, 0)
    numbered = built["infos"][built["by_source"]["cat/numbered.mp4"]]
    assert (numbered["fps"], numbered["fps_rational"]) == (25.0, "25")
    vfr = built["infos"][built["by_source"]["dog/vfr.mp4"]]
    assert 12.5 < vfr["fps"] < 25  # the average rate of a variable-rate source, made constant
    assert abs(float(Fraction(vfr["fps_rational"])) - vfr["fps"]) < 1e-9


@pytest.mark.parametrize("rel", ["cat/numbered.mp4", "cat/odd dims 444.mkv"])
def test_frame_identity(built, tmp_path, rel):
    frames = decode_frames(_stored(built, tmp_path, rel))
    assert [read_frame_index(f) for f in frames] == list(range(GOOD[rel][0]))


def test_torchcodec_seeks_exact_frames(built, tmp_path):
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(_stored(built, tmp_path, "cat/numbered.mp4")))
    wanted = [39, 0, 17, 16, 31]
    frames = decoder.get_frames_at(wanted).data  # (N, C, H, W)
    assert len(decoder) == 40 and [read_frame_index(f.permute(1, 2, 0).numpy()) for f in frames] == wanted


def test_manifest_and_shard_bounds(built):
    out, result = built["out"], built["result"]
    entry = json.loads((out / "manifest.json").read_text())["splits"]["train"]
    assert [out / s["tar"] for s in entry["shards"]] == result.shards
    assert all((out / s["index"]).is_file() and s["samples"] <= 3 for s in entry["shards"])
    assert sum(s["samples"] for s in entry["shards"]) == entry["samples"] == len(GOOD)
    assert entry["frames"] == result.total_frames == sum(i["frames"] for i in built["infos"].values())
    assert entry["bytes"] == result.total_bytes == sum(p.stat().st_size for p in result.shards)
    assert entry["params"]["codec"] == "vp9" and entry["video_ext"] == "mp4"
    assert entry["tools"]["ffmpeg"].startswith("ffmpeg version") and "ffmpeg-python" in entry["tools"]["packages"]
    assert entry["input_fingerprint"] == fingerprint(list_folder(built["src"], labels_from_dirs=True))
    assert not (out / ".staging" / "train").exists()
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(
        [p.name for p in result.shards] + [p.with_suffix(".idx").name for p in result.shards])


def test_index_files_match_dali_wds2idx(built, tmp_path):
    for tar in built["result"].shards:
        reference = tmp_path / (tar.stem + ".ref.idx")
        subprocess.run([str(Path(sys.executable).parent / "wds2idx"), str(tar), str(reference)], check=True, capture_output=True)
        assert tar.with_suffix(".idx").read_text() == reference.read_text()


def test_webdataset_reads_shards(built):
    import webdataset as wds

    urls = [str(p) for p in built["result"].shards]
    seen = {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}
    assert set(seen) == set(built["infos"])
    for key, sample in seen.items():
        assert {"mp4", "json", "cls"} <= set(sample)
        assert sample["mp4"] == built["samples"][key]["mp4"]


def test_dali_cpu_pipeline_decodes_stored_samples(built):
    from nvidia.dali import fn, pipeline_def

    shards = built["result"].shards

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, seed=0)
    def pipe():
        video, meta = fn.readers.webdataset(paths=[str(p) for p in shards], index_paths=[str(p.with_suffix(".idx")) for p in shards],
                                            ext=["mp4", "json"], random_shuffle=False, missing_component_behavior="error")
        return fn.decoders.video(video, device="cpu"), meta

    p = pipe()
    p.build()
    checked = 0
    for _ in range(len(built["infos"])):
        frames, meta = p.run()
        info = json.loads(bytes(np.asarray(meta[0])).decode())
        frames = np.asarray(frames[0])  # (F, H, W, 3)
        assert frames.shape == (info["frames"], info["height"], info["width"], 3)
        if info["source"] == "cat/numbered.mp4":
            assert [read_frame_index(f) for f in frames] == list(range(40))
            checked += 1
    assert checked == 1


def test_ffmpeg_runs_only_while_holding_a_transcode_slot(tmp_path, monkeypatch):
    """The pool has one process more than ``--workers`` (it validates while others transcode), so the number
    of ffmpeg transcodes at a time is bounded by the pool's semaphore: with one slot, never two at once."""
    import threading
    import time as clock

    from preprocess import media

    running, most = [0], [0]
    lock = threading.Lock()

    def fake_run(command, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        clock.sleep(0.2)  # long enough that a second slot is taken while the first is held, even on a loaded machine
        with lock:
            running[0] -= 1
        return subprocess.CompletedProcess(command, 0, b"", b"")

    monkeypatch.setattr(media.subprocess, "run", fake_run)

    def four_at_once(slots: int) -> int:
        monkeypatch.setattr(media, "TRANSCODE_SLOTS", threading.Semaphore(slots))
        running[0] = most[0] = 0
        jobs = [threading.Thread(target=media.transcode, args=(tmp_path / "in.mp4", tmp_path / f"{i}.mp4"),
                                 kwargs=dict(size=(128, 96), fps=Fraction(25), codec="vp9", gop=16)) for i in range(4)]
        for job in jobs:
            job.start()
        for job in jobs:
            job.join()
        return most[0]

    assert four_at_once(1) == 1
    assert four_at_once(2) == 2  # the check can see overlap


def test_a_group_shares_one_ffmpeg_and_gets_the_outcomes_and_bytes_of_one_each(tmp_path, monkeypatch):
    """``media.process_videos`` (one ffmpeg process for a group of inputs, which saves its start-up) gives
    each input the outcome and the bytes ``process_video`` gives it alone. A non-video is rejected at its
    probe and left out of the joint transcode; a damaged source makes the joint transcode report an error,
    so the group is redone one input at a time and only the damaged one is rejected."""
    from preprocess import media
    from synthetic.videos import write_lavfi_video
    from preprocess_helpers import write_truncated

    src = tmp_path / "src"
    for i in range(3):
        write_lavfi_video(src / f"v{i}.mp4", num_frames=20 + 3 * i)
    (src / "junk.bin").write_bytes(b"not a video\n" * 100)
    write_truncated(src / "damaged.mp4", faststart=True)
    params = media.EncodeParams(short_side=64, min_frames=4)
    calls = []
    real = media.run_ffmpeg
    monkeypatch.setattr(media, "run_ffmpeg", lambda command, dst: (calls.append(command.count("-i")), real(command, dst))[1])

    def outcomes(names, folder):
        folder.mkdir()
        got = media.process_videos([(src / n, n.split(".")[0]) for n in names], folder, params)
        return [(o if isinstance(o, media.Rejection) else [(s.frames, (folder / s.file).read_bytes()) for s in o]) for o in got]

    alone = [o for n in ("v0.mp4", "v1.mp4", "junk.bin", "v2.mp4", "damaged.mp4")
             for o in outcomes([n], tmp_path / f"alone-{n}")]
    calls.clear()
    assert outcomes(["v0.mp4", "v1.mp4", "junk.bin", "v2.mp4"], tmp_path / "group") == alone[:4]
    assert calls == [3]  # one ffmpeg for the three videos
    calls.clear()
    assert outcomes(["v0.mp4", "v1.mp4", "junk.bin", "v2.mp4", "damaged.mp4"], tmp_path / "with-damaged") == alone
    assert calls == [4, 1, 1, 1, 1]  # the joint run reported an error: each video again alone
    assert isinstance(alone[4], media.Rejection) and alone[4].stage == "transcode"
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_inputs_are_grouped_by_up_to_six_and_the_last_ones_go_alone():
    from preprocess.pool import group_inputs, pool_size

    assert [len(g) for g in group_inputs(list(range(32)), 2)] == [6] * 4 + [4] + [1] * 4
    assert [len(g) for g in group_inputs(list(range(32)), 1)] == [6] * 5 + [1] * 2
    assert [len(g) for g in group_inputs(list(range(14)), 2)] == [2] * 5 + [1] * 4  # two groups per slot at least
    assert [len(g) for g in group_inputs(list(range(7)), 2)] == [1] * 7
    assert [len(g) for g in group_inputs(list(range(3)), 2)] == [1] * 3
    assert sum(group_inputs(list(range(41)), 3), []) == list(range(41))  # every input once, in order
    assert (pool_size(1, cores=2), pool_size(2, cores=2), pool_size(4, cores=2)) == (2, 2, 4)  # a spare on an idle core
