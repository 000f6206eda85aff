"""A small labelled video dataset whose classes are defined by motion alone (the demo's and tests' data).

Every video shows a textured disk sliding over a textured background. Both textures, the disk's size and
its starting point are random per video, so no single frame says anything about the class. The class is
the motion: its direction and its speed (pixels per frame),

    up_slow, down_slow, up_fast, down_fast, sideways_slow, sideways_fast

``up_*`` and ``down_*`` of the same speed are time reversals of each other: the same set of frames in the
opposite order. ``sideways_*`` videos move left or right at random, which keeps every class unchanged
under the loader's horizontal-flip augmentation. The disk wraps around the frame edges (the world is a
torus), so any clip start sees the same motion.

``write_motion_dataset(root)`` writes ``root/{train,test}/<class>/<id>.mp4`` (labels from folder names,
for ``build_shards(..., labels_from_dirs=True)``) and ``root/unlabeled/<id>.mp4`` (random classes, for
self-supervised pretraining). Everything comes from one seed.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ffmpeg
import numpy as np

#: class name -> (vertical, horizontal) direction and speed kind; sideways picks its sign per video.
CLASSES: dict[str, tuple[tuple[int, int], str]] = {
    "up_slow": ((-1, 0), "slow"),
    "down_slow": ((1, 0), "slow"),
    "up_fast": ((-1, 0), "fast"),
    "down_fast": ((1, 0), "fast"),
    "sideways_slow": ((0, 1), "slow"),
    "sideways_fast": ((0, 1), "fast"),
}


def _texture(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """``(size, size, 3)`` float in [0, 1]: random colour blocks of ``cell`` pixels, lightly smoothed."""
    cells = -(-size // cell)
    small = rng.random((cells, cells, 3))
    big = np.repeat(np.repeat(small, cell, 0), cell, 1)[:size, :size]
    return (big + np.roll(big, 1, 0) + np.roll(big, 1, 1) + np.roll(big, (1, 1), (0, 1))) / 4


def motion_video(name: str, rng: np.random.Generator, *, size: int = 64, num_frames: int = 48, slow: int = 1, fast: int = 3,
                 num_disks: int = 3) -> np.ndarray:
    """Frames of one video of class ``name``: ``(num_frames, size, size, 3)`` uint8 RGB.

    ``slow``/``fast``: the two speeds, in whole pixels per frame (whole pixels keep the textures sharp).
    """
    (dy, dx), kind = CLASSES[name]
    speed = {"slow": slow, "fast": fast}[kind]
    vy, vx = dy * speed, dx * speed
    if vx and rng.random() < 0.5:
        vx = -vx
    background = 0.35 + 0.3 * _texture(rng, size, cell=int(rng.integers(2, 5)))  # low contrast, static
    layer = _texture(rng, size, cell=int(rng.integers(2, 4)))  # full contrast, moves
    yy, xx = np.mgrid[:size, :size]
    inside = np.zeros((size, size), bool)
    for _ in range(num_disks):  # disks at random places of one layer: they move together
        cy, cx = rng.uniform(0, size, 2)
        radius = rng.uniform(0.12, 0.2) * size
        dy, dx = np.minimum(abs(yy - cy), size - abs(yy - cy)), np.minimum(abs(xx - cx), size - abs(xx - cx))  # on the torus
        inside |= dy**2 + dx**2 <= radius**2
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        shift = (vy * t, vx * t)
        mask = np.roll(inside, shift, (0, 1))[..., None]
        frames[t] = np.round(255 * np.where(mask, np.roll(layer, shift, (0, 1)), background)).astype(np.uint8)
    return frames


def write_video(path: Path, frames: np.ndarray, *, fps: float = 25.0) -> Path:
    """Encode ``(F, H, W, 3)`` uint8 frames as near-lossless H.264 (the shard builder re-encodes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _, h, w, _ = frames.shape
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=fps)
    stream.output(str(path), vcodec="libx264", pix_fmt="yuv420p", crf=10, g=16).overwrite_output().run(input=frames.tobytes(), quiet=True)
    return path


def write_motion_dataset(
    root: str | Path,
    *,
    train_per_class: int = 6,
    test_per_class: int = 8,
    unlabeled: int = 120,
    size: int = 64,
    num_frames: int = 48,
    slow: int = 1,
    fast: int = 3,
    fps: float = 25.0,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the dataset under ``root``; returns ``{"train": root/train, "test": root/test, "unlabeled": root/unlabeled}``.

    ``*_per_class``: labelled videos per class; ``unlabeled``: videos of uniformly random classes with no
    label (folder ``unlabeled/``); ``size``: frame side in pixels; ``num_frames``: frames per video;
    ``slow``/``fast``: the classes' speeds in pixels per frame.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)  # drawn in a fixed order below; only the encoding runs in parallel
    names = sorted(CLASSES)
    jobs = []
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in names:
            jobs += [(root / split / name / f"{split}_{name}_{i:03d}.mp4", name) for i in range(count)]
    jobs += [(root / "unlabeled" / f"unlabeled_{i:04d}.mp4", names[int(rng.integers(len(names)))]) for i in range(unlabeled)]
    videos = [(path, motion_video(name, rng, size=size, num_frames=num_frames, slow=slow, fast=fast)) for path, name in jobs]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # each encode is an ffmpeg subprocess
        list(pool.map(lambda job: write_video(job[0], job[1], fps=fps), videos))
    return {split: root / split for split in ("train", "test", "unlabeled")}
