"""Building blocks of the loader tests (the shard sets themselves are session fixtures in ``conftest.py``):
tiny frame-numbered videos packed by the real shard builder (``preprocess.build_shards``), the clip settings
the tests load them with, one epoch of a loader, and hand-edited copies of the shards' samples, broken."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline import LoaderConfig, build_loader
from preprocess.build import build_shards
from synthetic.videos import read_frame_index, write_numbered_video

BACKENDS = ["reference", "dali"]
SPEEDS = (-8, -4, -2, -1, 1, 2, 4, 8)
# tiny clips: T=8, 64x64 output, whole frame resized (no crop/flip) so the frame number stays readable
RAW = dict(num_frames=8, speeds=SPEEDS, num_clips=4, batch_size=2, resize=64, crop_size=64, augment=False)
# Tolerance between DALI's frames and torchcodec's (libavcodec + swscale's default conversion, which
# test_dali_stream recomputes views from), uint8 levels after the identical resize: measured max 2. DALI against
# the reference backend is tighter (1 level, tests/test_backend_agreement.py).
PIXEL_TOLERANCE = 4

#: source name -> (class folder, frames). 12 frames: too short for 4 distinct speeds at T=8 (only +-1 fit).
VIDEOS = {
    "tiny": ("walk", 12),
    "short": ("walk", 40),
    "mid": ("run", 64),
    "long": ("run", 100),
    "longer": ("walk", 130),
    "longest": ("run", 160),
    "extra": ("run", 72),
    "other": ("walk", 90),
}

#: Longer videos (up to 300 frames) for the stream-cutting, routing and decode-work tests, and their clip settings.
LONG_VIDEOS = {"long": ("walk", 300), "mid": ("run", 140), "short": ("walk", 60), "other": ("run", 96)}
LONG_RAW = dict(num_frames=8, speeds=(-4, -2, -1, 1, 2, 4), num_clips=3, batch_size=2, resize=64, crop_size=64, augment=False)


def build_numbered_shards(root: Path, *, codec: str = "vp9", gop: int = 16, videos: dict = VIDEOS, shard_max_count: int = 3) -> Path:
    """Frame-numbered 176x128 videos -> ``root/out`` shards (labels from class folders). Returns ``root/out``."""
    src, out = root / "src", root / "out"
    for name, (label, frames) in videos.items():
        write_numbered_video(src / label / f"{name}.mp4", num_frames=frames, vcodec="libx264")
    build_shards(src, out, labels_from_dirs=True, codec=codec, gop=gop, min_frames=8, workers=2,
                 shard_max_count=shard_max_count, progress=False)
    return out


def run(shards, backend, *, epoch=0, normalized=False, num_workers=0, **overrides):
    """One epoch of ``build_loader`` with ``RAW`` clip settings (``overrides`` replace them): (loader, batches)."""
    loader = build_loader(shards, LoaderConfig(**{**RAW, **overrides}), backend=backend, num_workers=num_workers, normalized=normalized)
    loader.set_epoch(epoch)
    return loader, list(loader)


def frame_numbers(clips: np.ndarray) -> np.ndarray:
    """Frame index drawn in every frame of uint8 clips (..., T, H, W, 3) -> (..., T)."""
    flat = clips.reshape(-1, *clips.shape[-3:])
    return np.array([read_frame_index(f) for f in flat]).reshape(clips.shape[:-3])


def write_tar(tar_path: Path, samples: dict[str, dict[str, bytes]]) -> Path:
    """A WebDataset tar (no index file: the loader scans it) with ``samples`` in order."""
    import webdataset as wds

    with wds.TarWriter(str(tar_path)) as sink:
        for key, members in samples.items():
            sink.write({"__key__": key, **members})
    return tar_path


def json_of(members: dict[str, bytes]) -> dict:
    return json.loads(members["json"])


def mp4_bytes_h264(frames: int, tmp: Path) -> bytes:
    """A valid 176x128 H.264 mp4 (DALI's CPU decoder rejects H.264, PyAV and torchcodec read it)."""
    path = write_numbered_video(tmp / "h264.mp4", num_frames=frames, vcodec="libx264")
    return path.read_bytes()


def good_samples(shards, count=4):
    """The first ``count`` samples of at least 40 frames in ``shards``: key -> {ext: bytes}."""
    from preprocess_helpers import read_samples

    good = {}
    for tar_path in shards:
        for key, members in read_samples([tar_path]).items():
            if json.loads(members["json"])["frames"] >= 40 and len(good) < count:
                good[key] = members
    return good


def corrupt_sample(kind, good, tmp_path):
    """A broken copy of the first of ``good``: (key, members). ``kind``: garbage (random video bytes),
    wrong_frames (json over-counts by 200), missing_json, or h264 (valid, but not for DALI's CPU decoder)."""
    donor_key, donor = next(iter(good.items()))
    meta = json.loads(donor["json"])
    if kind == "garbage":
        bad = {**donor, "mp4": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()}
    elif kind == "wrong_frames":
        bad = {**donor, "json": json.dumps({**meta, "frames": meta["frames"] + 200}).encode()}
    elif kind == "missing_json":
        bad = {k: v for k, v in donor.items() if k != "json"}
    else:  # h264: a valid video DALI's CPU decoder cannot decode (the container check passes)
        bad = {**donor, "mp4": mp4_bytes_h264(meta["frames"], tmp_path), "json": json.dumps({**meta, "codec": "h264"}).encode()}
    return "zz_bad_" + kind, bad
