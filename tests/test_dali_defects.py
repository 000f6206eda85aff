"""The DALI GPU path's defects found by reading DALI 2.4, fixed and checked on CPU where the logic allows:

* stream cutting runs in processes, off the training process (``DaliStream(cut_workers=N)``);
* videos below NVDEC's smallest frame are routed to a host path, with the reason said;
* a frame DALI reports as decoded but never wrote is an error (the witness frames of ``stream_cut.py``);
* one DALI pipeline on the dynamic executor serves every epoch, with no host sync before the next outputs;
* the GPU decode thread default is derived from the NVDEC engines the GPU reports (``pipeline/dali/nvdec.py``).

What needs a GPU itself is in the GPU check (``device/check.py``)."""

from __future__ import annotations

import ctypes
import io
import os

import av
import numpy as np
import pytest
import torch

from pipeline import LoaderConfig, build_loader, list_shards
from pipeline.dali import stream as dali_stream
from pipeline.dali.nvdec import CUDA_VIDEO_CODEC, NvdecUnavailable, _DecodeCaps, decoder_caps
from pipeline.dali.stream_cut import CutStream, cut_sample, cut_stream
from pipeline.io.shard_reader import scan_shards
from pipeline.loader import smallest_sizes
from pipeline.routing import (MIXED_CODECS, NVDEC_MIN_SIZE, THREADS_PER_NVDEC, choose_backend, dali_threads,
                              gpu_decode_threads_for, too_small_for_nvdec)
from pipeline_helpers import build_numbered_shards, frame_numbers
from preprocess import build_shards
from synthetic.videos import read_frame_index, write_numbered_video

RAW = dict(num_frames=8, speeds=(-4, -2, -1, 1, 2, 4), num_clips=3, batch_size=2, resize=64, crop_size=64, augment=False)
VIDEOS = {"long": ("walk", 300), "mid": ("run", 140), "short": ("walk", 60), "other": ("run", 96)}


@pytest.fixture(scope="module")
def vp9(tmp_path_factory):
    return list_shards(build_numbered_shards(tmp_path_factory.mktemp("vp9"), videos=VIDEOS, gop=16))


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    """H.264 with B-frames; 289 frames: the last GOP is one lone keyframe."""
    return list_shards(build_numbered_shards(tmp_path_factory.mktemp("h264"), codec="h264", videos={"a": ("run", 140), "b": ("walk", 289)}))


@pytest.fixture(scope="module")
def small_vp9(tmp_path_factory):
    """96x96 frame-numbered VP9: below NVDEC's 128x128 for VP9."""
    root = tmp_path_factory.mktemp("small")
    for i, frames in enumerate((64, 80, 72)):
        write_numbered_video(root / "src" / "walk" / f"v{i}.mp4", num_frames=frames, width=96, height=96)
    build_shards(root / "src", root / "out", labels_from_dirs=True, short_side=96, min_frames=8, workers=1, progress=False)
    return list_shards(root / "out")


def _decode_all(data: np.ndarray) -> list[int]:
    with av.open(io.BytesIO(data.tobytes())) as container:
        return [read_frame_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


# ---------------------------------------------------------------- NVDEC's smallest frames
def test_nvdec_minimum_sizes_are_the_documented_ones():
    assert NVDEC_MIN_SIZE["vp9"] == NVDEC_MIN_SIZE["av1"] == (128, 128) and NVDEC_MIN_SIZE["hevc"] == (144, 144)
    assert set(NVDEC_MIN_SIZE) == MIXED_CODECS


@pytest.mark.parametrize(("smallest", "small"), [
    ({"vp9": (128, 128)}, []),
    ({"vp9": (171, 127)}, ["vp9 smaller than 128x128 (smallest here 171x127)"]),
    ({"hevc": (160, 128), "h264": (64, 64)}, ["hevc smaller than 144x144 (smallest here 160x128)"]),
    ({"h264": (47, 300)}, ["h264 smaller than 48x16 (smallest here 47x300)"]),
])
def test_too_small_for_nvdec(smallest, small):
    assert too_small_for_nvdec(smallest) == small


@pytest.mark.parametrize(("requested", "codecs", "smallest", "backend"), [
    ("auto", {"vp9"}, {"vp9": (96, 96)}, "reference"),
    ("dali", {"vp9"}, {"vp9": (96, 96)}, "dali-cpu"),  # DALI's CPU decoder has no size limit
    ("dali", {"h264"}, {"h264": (32, 32)}, "reference"),  # and no H.264
    ("auto", {"vp9", "h264"}, {"vp9": (176, 128), "h264": (64, 64)}, "dali-gpu"),
    ("dali", {"mjpeg", "vp9"}, {"mjpeg": (32, 32), "vp9": (100, 200)}, "dali-cpu"),
])
def test_small_videos_route_to_a_host_path_with_the_reason(requested, codecs, smallest, backend):
    route = choose_backend(requested, codecs, cuda=True, smallest=smallest)
    assert route.backend == backend
    if backend != "dali-gpu" and "vp9" in smallest and smallest["vp9"][0] < 128:
        assert "NVDEC cannot decode vp9 smaller than 128x128" in route.reason
    if "mjpeg" in codecs:
        assert "cannot decode mjpeg" in route.reason and "NVDEC cannot decode vp9 smaller than 128x128 (smallest here 100x200)" in route.reason
    assert choose_backend(requested, codecs, cuda=False, smallest=smallest).backend in ("dali-cpu", "reference")


def test_smallest_sizes_are_per_codec_and_per_dimension(small_vp9, vp9):
    records = scan_shards(small_vp9)[0] + scan_shards(vp9)[0]
    assert smallest_sizes(records) == {"vp9": (96, 96)}
    assert smallest_sizes(scan_shards(vp9)[0]) == {"vp9": (176, 128)}


@pytest.mark.parametrize("backend", ["auto", "dali"])
def test_a_small_vp9_set_on_a_gpu_machine_runs_on_a_host_path_frame_exact(small_vp9, monkeypatch, backend):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = LoaderConfig(**{**RAW, "resize": 96, "crop_size": 96})
    loader = build_loader(small_vp9, cfg, backend=backend, num_workers=0, normalized=False)
    assert loader.backend == {"auto": "reference", "dali": "dali-cpu"}[backend]
    assert "NVDEC cannot decode vp9 smaller than 128x128 (smallest here 96x96)" in loader.route_reason
    batch = next(iter(loader))
    np.testing.assert_array_equal(frame_numbers(batch["clips"].numpy()), batch["frame_indices"].numpy())


# ---------------------------------------------------------------- decode threads from the GPU
def test_decode_threads_are_derived_from_the_nvdec_engines():
    assert THREADS_PER_NVDEC == 2
    assert gpu_decode_threads_for(7, 16) == 14  # H100/H200: 7 NVDEC engines
    assert gpu_decode_threads_for(7, 8) == 8  # never more threads than CPUs
    assert gpu_decode_threads_for(0, 16) == 1
    assert dali_threads("dali-gpu", num_workers=2, gpu_decode_threads=0, nvdec_engines=5, cpus=32) == 10
    assert dali_threads("dali-gpu", num_workers=2, gpu_decode_threads=6, nvdec_engines=5, cpus=32) == 6  # given: used as is
    assert dali_threads("dali-cpu", num_workers=3, gpu_decode_threads=0) == 3
    with pytest.raises(ValueError, match="NVDEC engine count"):
        dali_threads("dali-gpu", num_workers=2, gpu_decode_threads=0)
    with pytest.raises(ValueError, match=">= 0"):
        dali_threads("dali-gpu", num_workers=2, gpu_decode_threads=-1)


def test_nvdec_caps_structure_matches_the_sdk_layout():
    """``CUVIDDECODECAPS`` from cuviddec.h: the driver writes into it, so every offset must be exact."""
    offsets = {name: getattr(_DecodeCaps, name).offset for name, _ in _DecodeCaps._fields_}
    assert offsets == {"eCodecType": 0, "eChromaFormat": 4, "nBitDepthMinus8": 8, "reserved1": 12, "bIsSupported": 24,
                       "nNumNVDECs": 25, "nOutputFormatMask": 26, "nMaxWidth": 28, "nMaxHeight": 32, "nMaxMBCount": 36,
                       "nMinWidth": 40, "nMinHeight": 42, "bIsHistogramSupported": 44, "nCounterBitDepth": 45,
                       "nMaxHistogramBins": 46, "reserved3": 48}
    assert ctypes.sizeof(_DecodeCaps) == 88
    assert CUDA_VIDEO_CODEC["h264"] == 4 and CUDA_VIDEO_CODEC["hevc"] == 8 and CUDA_VIDEO_CODEC["vp9"] == 10 and CUDA_VIDEO_CODEC["av1"] == 11


def test_nvdec_caps_without_a_driver_is_one_clear_error():
    try:
        ctypes.CDLL("libnvcuvid.so.1")
    except OSError:
        pass
    else:
        pytest.skip("this machine has NVDEC's library")
    with pytest.raises(NvdecUnavailable) as e:
        decoder_caps({"vp9"})
    assert "cannot be loaded" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="no codec named xvid"):
        decoder_caps({"xvid"})


# ---------------------------------------------------------------- the witness: no frame DALI did not write
@pytest.mark.parametrize("wanted", [[0, 1, 2], [50, 58, 66, 120], [30, 31, 99, 250, 299], [299], [32], [16, 299]])
def test_witness_frame_ends_the_cut_and_decodes_to_its_first_frame(vp9, wanted):
    record = next(r for r in scan_shards(vp9)[0] if r.video_frames == 300)
    plain = cut_stream(record, record.read_video(), wanted)
    cut = cut_stream(record, record.read_video(), wanted, witness=True)
    frames = _decode_all(cut.data)
    assert frames[: len(cut.source_frames)] == cut.source_frames.tolist()
    assert frames[-1] == cut.source_frames[0]  # the copy of the first keyframe, after everything wanted
    assert cut.decoded == plain.decoded and cut.frame_indices.tolist() == plain.frame_indices.tolist()
    request = cut.frames_to_request
    assert request[: len(wanted)].tolist() == cut.frame_indices.tolist() and request[cut.witness[1]] == len(cut.source_frames)
    assert request[cut.witness[0]] == 0
    assert len(request) == len(wanted) + (1 if 0 in cut.frame_indices else 2)  # the first frame is asked for once
    if cut.source_frames[-1] in range(0, 300, 16):  # it ended on a keyframe: one more packet before the witness
        assert len(cut.source_frames) == len(plain.source_frames) + 1


def test_witness_on_reordered_h264_and_where_it_cannot_be(h264):
    records = {r.video_frames: r for r in scan_shards(h264)[0]}
    cut = cut_stream(records[140], records[140].read_video(), [40, 41, 70], witness=True)
    frames = _decode_all(cut.data)
    assert frames == list(range(32, 80)) + [32] and cut.frames_to_request[cut.witness[1]] == 48
    # the last GOP of 289 frames is a lone keyframe: a copy right after it could be taken for the same
    # picture by an H.264 decoder, so that cut has no witness (counted: DaliStream.witness_frames)
    lone = cut_stream(records[289], records[289].read_video(), [290 - 2], witness=True)
    assert lone.witness is None and lone.request is None and lone.frames_to_request is lone.frame_indices


def test_cut_sample_returns_bad_samples_instead_of_raising(vp9):
    record = scan_shards(vp9)[0][0]
    record = next(r for r in scan_shards(vp9)[0] if r.video_frames == 140)
    broken = type(record)(record.shard, record.key, record.members, {**record.meta, "frames": 145})
    result = cut_sample(broken, np.array([0, 1]))
    assert isinstance(result, Exception) and "json says 145 frames, the video holds 140" in str(result)


def test_a_frame_dali_did_not_write_is_an_error(vp9, monkeypatch):
    """The real DALI CPU decoder decodes; the witness slots are pointed at two different frames, as when DALI
    hands back a slot it never wrote: every sample becomes a named error, none becomes a clip."""
    def lying(record, wanted, witness=True):
        cut = cut_sample(record, wanted, witness)
        if isinstance(cut, Exception) or cut.witness is None:
            return cut
        request = np.append(cut.frames_to_request, [0, len(cut.source_frames) - 1]).astype(np.int32)
        return CutStream(cut.data, cut.source_frames, cut.frame_indices, cut.decoded, cut.codec, request, (len(request) - 2, len(request) - 1))

    monkeypatch.setattr(dali_stream, "cut_sample", lying)
    cfg = LoaderConfig(**{**RAW, "skip_bad_samples": True})
    loader = build_loader(vp9, cfg, backend="dali", num_workers=0, normalized=False)
    with pytest.raises(RuntimeError, match="every sample failed"):
        list(loader)
    reasons = {s["reason"] for s in loader.stats["skipped_samples"]}
    assert reasons == {"DALI returned frames it did not decode: the stream's first frame and its witness copy at the end differ (stream_cut.py)"}


def test_witnessed_batches_are_frame_exact_and_counted(vp9):
    loader = build_loader(vp9, LoaderConfig(**RAW), backend="dali", num_workers=0, normalized=False)
    batches = list(loader)
    for batch in batches:
        np.testing.assert_array_equal(frame_numbers(batch["clips"].numpy()), batch["frame_indices"].numpy())
    samples = sum(len(b["key"]) for b in batches)
    assert loader._stream.witness_frames == samples and loader.stats["skipped"] == 0


# ---------------------------------------------------------------- one pipeline, dynamic executor, no host sync
def test_dynamic_executor_keeps_earlier_outputs_valid(vp9):
    """What lets the GPU path drop its per-batch host sync: taking a batch's outputs does not overwrite the
    previous batch's while they are referenced."""
    from pipeline.dali.stream import build_decode_pipeline

    record = next(r for r in scan_shards(vp9)[0] if r.video_frames == 300)
    pipe = build_decode_pipeline(batch_size=1, num_threads=1, device_id=None)
    assert pipe.exec_dynamic
    data = np.frombuffer(record.read_video(), np.uint8)
    outputs = []
    for frames in ([3, 4], [200, 201]):
        pipe.feed_input("encoded", [data])
        pipe.feed_input("frame_indices", [np.array(frames, np.int32)])
        pipe.schedule_run()
    first = pipe.outputs()[0]
    seen = np.array(first[0]).copy()
    outputs.append(pipe.outputs()[0])
    assert [read_frame_index(f) for f in np.array(first[0])] == [3, 4]
    np.testing.assert_array_equal(np.array(first[0]), seen)
    assert [read_frame_index(f) for f in np.array(outputs[0][0])] == [200, 201]


def test_one_pipeline_serves_every_epoch_even_after_an_early_stop(vp9):
    cfg = LoaderConfig(**{**RAW, "batch_size": 1})
    loader = build_loader(vp9, cfg, backend="dali", num_workers=0, normalized=False)
    stream = loader._stream
    for epoch in range(3):
        loader.set_epoch(epoch)
        batches = iter(loader)
        batch = next(batches)  # two batches are scheduled ahead; stop after the first
        np.testing.assert_array_equal(frame_numbers(batch["clips"].numpy()), batch["frame_indices"].numpy())
        if epoch == 0:
            pipe = stream._pipe
        batches.close()
        assert stream._pipe is pipe  # kept: the unconsumed outputs were drained, not left for the next epoch
    loader.set_epoch(3)
    for batch in loader:  # the next full epoch gets its own frames, not the drained ones
        np.testing.assert_array_equal(frame_numbers(batch["clips"].numpy()), batch["frame_indices"].numpy())
    assert stream._pipe is pipe
    loader.close()
    assert stream._pipe is None


# ---------------------------------------------------------------- stream cutting off the training process
def test_streams_are_cut_in_other_processes_with_the_same_results(vp9):
    cfg = LoaderConfig(**RAW)
    inline = build_loader(vp9, cfg, backend="dali", num_workers=0, normalized=False)
    pooled = build_loader(vp9, cfg, backend="dali", num_workers=2, normalized=False)
    for epoch in range(2):
        inline.set_epoch(epoch)
        pooled.set_epoch(epoch)
        for a, b in zip(inline, pooled, strict=True):
            assert a["key"] == b["key"]
            torch.testing.assert_close(a["clips"], b["clips"], rtol=0, atol=0)
    assert inline._stream._cutters is None
    workers = pooled._stream._cutters._processes
    assert len(workers) == 2 and os.getpid() not in workers
    assert pooled.decoded_frames_per_clip == inline.decoded_frames_per_clip
    pooled.close()
    assert pooled._stream._cutters is None
