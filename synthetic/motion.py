"""A small labelled video dataset whose classes are defined by motion alone (the demo's and tests' data).

Every video shows textured disks sliding over a textured background. Both textures, the disks' sizes and
their starting points are random per video, so no single frame's colours say anything about the class. The
class is the motion: its direction and its speed (pixels per frame),

    up_slow, down_slow, up_fast, down_fast, sideways_slow, sideways_fast

``sideways_*`` videos move left or right at random, which keeps every class unchanged under the loader's
horizontal-flip augmentation. The disks wrap around the frame edges (the world is a torus), so any clip
start sees the same kind of motion.

The *design* decides whether the arrow of time is visible, which the speed pretext needs to learn the sign
of the playback speed and the clip order (measured in BENCHMARKS.md "Demo: data designs"):

* ``reversible``: constant velocity and nothing else. ``up_*`` played backwards is exactly ``down_*``, so the
  sign of a clip's speed cannot be learned from these videos.
* ``friction``: the disks start at the class speed and slow down by a fixed factor per frame (velocity
  ``v0 * exp(-k t)``, positions sub-pixel, drawn by bilinear interpolation). Played backwards they speed up,
  which never happens forwards; the playback speed sets how fast they slow down per shown frame.
* ``trail``: constant velocity, and the disks leave a fading trail (each pixel they cover lights up and then
  decays by a fixed factor per frame, like a phosphor screen). Played backwards the trail runs ahead of the
  disks and brightens before they arrive; the playback speed sets the ratio of displacement per shown frame
  to trail length.

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

#: The ways to draw the motion (see the module docstring).
DESIGNS = ("reversible", "friction", "trail")

#: friction: the velocity falls by this factor over a whole video, whatever its length.
FRICTION_SLOWDOWN = 3.0
#: trail: share of a trail pixel's brightness left after one frame.
TRAIL_DECAY = 0.75
#: trail: frames simulated before frame 0, so the first frame already has a full trail.
_TRAIL_WARMUP = 16


def _texture(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """``(size, size, 3)`` float in [0, 1]: random colour blocks of ``cell`` pixels, lightly smoothed."""
    cells = -(-size // cell)
    small = rng.random((cells, cells, 3))
    big = np.repeat(np.repeat(small, cell, 0), cell, 1)[:size, :size]
    return (big + np.roll(big, 1, 0) + np.roll(big, 1, 1) + np.roll(big, (1, 1), (0, 1))) / 4


def _shift(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``image`` moved by ``(dy, dx)`` pixels on the torus; fractional shifts by bilinear interpolation."""
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    fy, fx = dy - iy, dx - ix
    out = (1 - fy) * (1 - fx) * np.roll(image, (iy, ix), (0, 1)) + (1 - fy) * fx * np.roll(image, (iy, ix + 1), (0, 1))
    return out + fy * (1 - fx) * np.roll(image, (iy + 1, ix), (0, 1)) + fy * fx * np.roll(image, (iy + 1, ix + 1), (0, 1))


def motion_video(name: str, rng: np.random.Generator, *, size: int = 64, num_frames: int = 48, slow: float = 1, fast: float = 3,
                 num_disks: int = 3, design: str = "reversible") -> np.ndarray:
    """Frames of one video of class ``name``: ``(num_frames, size, size, 3)`` uint8 RGB.

    ``slow``/``fast``: the two speeds in pixels per frame (for ``friction``: at frame 0). Whole pixels keep the
    textures of ``reversible`` and ``trail`` sharp. ``design``: one of :data:`DESIGNS`.
    """
    if design not in DESIGNS:
        raise ValueError(f"unknown motion design {design!r}; expected one of {DESIGNS}")
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
        ry, rx = np.minimum(abs(yy - cy), size - abs(yy - cy)), np.minimum(abs(xx - cx), size - abs(xx - cx))  # on the torus
        inside |= ry**2 + rx**2 <= radius**2
    t = np.arange(num_frames, dtype=np.float64)
    if design == "friction":
        rate = np.log(FRICTION_SLOWDOWN) / max(1, num_frames - 1)
        travelled = (1 - np.exp(-rate * t)) / rate  # integral of exp(-rate t): pixels moved per pixel/frame of v0
    else:
        travelled = t
    alpha = inside.astype(np.float64)[..., None]
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    if design == "trail":
        trail_colour = 0.6 + 0.4 * rng.random(3)  # one light colour per video
        glow = np.zeros((size, size, 1))
        for w in range(-_TRAIL_WARMUP, 0):  # constant velocity: the past is the same motion
            glow = np.maximum(TRAIL_DECAY * glow, np.roll(alpha, (vy * w, vx * w), (0, 1)))
    for i in range(num_frames):
        shift = (vy * travelled[i], vx * travelled[i])
        mask = _shift(alpha, *shift)
        if design == "trail":
            glow = np.maximum(TRAIL_DECAY * glow, mask)
            base = background * (1 - 0.8 * glow) + 0.8 * glow * trail_colour
        else:
            base = background
        frames[i] = np.round(255 * (mask * _shift(layer, *shift) + (1 - mask) * base)).astype(np.uint8)
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
    slow: float = 1,
    fast: float = 3,
    design: str = "reversible",
    fps: float = 25.0,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the dataset under ``root``; returns ``{"train": root/train, "test": root/test, "unlabeled": root/unlabeled}``.

    ``*_per_class``: labelled videos per class; ``unlabeled``: videos of uniformly random classes with no
    label (folder ``unlabeled/``); ``size``: frame side in pixels; ``num_frames``: frames per video;
    ``slow``/``fast``: the classes' speeds in pixels per frame; ``design``: how the motion is drawn
    (:data:`DESIGNS`).
    """
    if design not in DESIGNS:
        raise ValueError(f"unknown motion design {design!r}; expected one of {DESIGNS}")
    root = Path(root)
    rng = np.random.default_rng(seed)  # drawn in a fixed order below; only the encoding runs in parallel
    names = sorted(CLASSES)
    jobs = []
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in names:
            jobs += [(root / split / name / f"{split}_{name}_{i:03d}.mp4", name) for i in range(count)]
    jobs += [(root / "unlabeled" / f"unlabeled_{i:04d}.mp4", names[int(rng.integers(len(names)))]) for i in range(unlabeled)]
    videos = [(path, motion_video(name, rng, size=size, num_frames=num_frames, slow=slow, fast=fast, design=design)) for path, name in jobs]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # each encode is an ffmpeg subprocess
        list(pool.map(lambda job: write_video(job[0], job[1], fps=fps), videos))
    return {split: root / split for split in ("train", "test", "unlabeled")}
