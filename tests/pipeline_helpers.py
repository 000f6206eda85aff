"""Shared fixtures' building blocks for the loader tests: tiny frame-numbered videos packed by the real
shard builder (``preprocess.build_shards``), and hand-edited copies of its shards with broken samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from preprocess.build import build_shards
from synthetic.videos import read_frame_index, write_numbered_video

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


def build_numbered_shards(root: Path, *, codec: str = "vp9", gop: int = 16, videos: dict = VIDEOS, shard_max_count: int = 3) -> Path:
    """Frame-numbered 176x128 videos -> ``root/out`` shards (labels from class folders). Returns ``root/out``."""
    src, out = root / "src", root / "out"
    for name, (label, frames) in videos.items():
        write_numbered_video(src / label / f"{name}.mp4", num_frames=frames, vcodec="libx264")
    build_shards(src, out, labels_from_dirs=True, codec=codec, gop=gop, min_frames=8, workers=2,
                 shard_max_count=shard_max_count, progress=False)
    return out


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
