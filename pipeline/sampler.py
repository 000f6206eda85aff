"""The speed sampler: which source frames every clip holds, and its labels (docs/design.md §2).

Pure numpy, used by both loader backends, the preview and the benchmark, so their semantics cannot drift.

* A clip at speed ``s`` starting at ``p`` holds frames ``p, p+|s|, ..., p+|s|(T-1)``, reversed when ``s < 0``;
  ``p`` is uniform over ``0 <= p <= N-1-|s|(T-1)``. Indices never leave ``[0, N)``; nothing wraps around.
* pretext: K distinct speeds drawn uniformly without replacement from the speeds that fit the video, each
  clip with its own start, in random order. A video with fewer than K fitting speeds is excluded.
* train: one speed-1 clip at a random start. eval: ``num_eval_clips`` speed-1 clips whose starts are evenly
  spaced from 0 to N-T (rounded). Both exclude videos with N < T.

Labels:

* ``speed_label[k]``: index of clip k's signed speed in ``speeds`` (-1 if speed 1 is used in train/eval
  mode but not in ``speeds``).
* ``order_label``: the sorting-permutation class. ``perm = argsort(speeds)`` (stable) lists the clip
  positions from slowest (most negative) to fastest signed speed; ``order_label`` is the index of
  ``tuple(perm)`` in ``list(itertools.permutations(range(K)))`` (lexicographic rank), in ``[0, K!)``.
  For train/eval (all speeds equal) it is 0.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from pipeline.config import LoaderConfig


@dataclass(frozen=True)
class ClipSet:
    """The clips drawn for one video."""

    frame_indices: np.ndarray
    """(K, T) int64 source frame indices, in clip (playback) order."""
    speeds: np.ndarray
    """(K,) int64 signed speeds."""
    speed_label: np.ndarray
    """(K,) int64 index of each speed in the configured speed set."""
    order_label: int
    """Lexicographic rank of ``argsort(speeds)`` among the permutations of range(K)."""

    def union(self) -> tuple[np.ndarray, np.ndarray]:
        """``(union, positions)``: the sorted unique frames to decode once for all clips, and
        ``(K, T)`` positions into it such that ``union[positions] == frames``."""
        union, inverse = np.unique(self.frame_indices, return_inverse=True)
        return union, inverse.reshape(self.frame_indices.shape)


def permutation_rank(perm) -> int:
    """Index of ``perm`` in ``list(itertools.permutations(range(len(perm))))`` (Lehmer code)."""
    perm = [int(p) for p in perm]
    remaining = sorted(perm)
    rank = 0
    for i, p in enumerate(perm):
        j = remaining.index(p)
        rank += j * math.factorial(len(perm) - 1 - i)
        remaining.pop(j)
    return rank


def order_label(speeds) -> int:
    """Sorting-permutation class of signed ``speeds`` (see module docstring)."""
    return permutation_rank(np.argsort(np.asarray(speeds), kind="stable"))


def sample_rng(seed: int, epoch: int, key: str, repeat: int = 0) -> np.random.Generator:
    """The generator for one sample's draws, from (seed, epoch, key, repeat) only: reproducible, and the same
    whichever backend, worker or rank draws it. ``repeat`` > 0 is used for samples re-drawn to top up a batch."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return np.random.default_rng([int(seed), int(epoch), int.from_bytes(digest, "little"), int(repeat)])


class SpeedSampler:
    """Draws a video's clips from its frame count. Built from a :class:`LoaderConfig` or plain arguments."""

    def __init__(self, *, num_frames: int, speeds, mode: str = "pretrain", num_clips: int = 4, num_eval_clips: int = 10):
        self.num_frames = int(num_frames)
        self.speeds = tuple(int(s) for s in speeds)
        self.mode = mode
        self.num_clips = {"pretrain": int(num_clips), "finetune": 1, "eval": int(num_eval_clips)}[mode]
        self._speed_index = {s: i for i, s in enumerate(self.speeds)}

    @classmethod
    def from_config(cls, cfg: LoaderConfig) -> "SpeedSampler":
        return cls(num_frames=cfg.num_frames, speeds=cfg.speeds, mode=cfg.mode, num_clips=cfg.num_clips, num_eval_clips=cfg.num_eval_clips)

    def span(self, speed: int) -> int:
        """Source frames covered by one clip at ``speed``: ``|s|(T-1)+1``."""
        return abs(speed) * (self.num_frames - 1) + 1

    def fitting_speeds(self, video_frames: int) -> tuple[int, ...]:
        """The configured speeds whose clips fit in a video of ``video_frames`` frames."""
        return tuple(s for s in self.speeds if self.span(s) <= video_frames)

    def exclusion_reason(self, video_frames: int) -> str | None:
        """Why a video of ``video_frames`` frames cannot give a sample in this mode, or None if it can."""
        if self.mode == "pretrain":
            fitting = self.fitting_speeds(video_frames)
            if len(fitting) < self.num_clips:
                return (
                    f"too short for {self.num_clips} distinct speeds: {video_frames} frames fit "
                    f"{len(fitting)} of {self.speeds} at T={self.num_frames}"
                )
            return None
        if video_frames < self.num_frames:
            return f"too short: {video_frames} frames < T={self.num_frames}"
        return None

    def sample(self, video_frames: int, rng: np.random.Generator) -> ClipSet:
        """Draw the clips for a video with ``video_frames`` frames. Raises ValueError if it is excluded."""
        reason = self.exclusion_reason(video_frames)
        if reason is not None:
            raise ValueError(reason)
        if self.mode == "pretrain":
            fitting = np.asarray(self.fitting_speeds(video_frames), dtype=np.int64)
            # choice without replacement returns the K speeds in random order: that is the clip shuffle
            speeds = rng.choice(fitting, size=self.num_clips, replace=False)
            starts = np.array([rng.integers(0, video_frames - self.span(s) + 1) for s in speeds], dtype=np.int64)
        elif self.mode == "finetune":
            speeds = np.ones(1, dtype=np.int64)
            starts = rng.integers(0, video_frames - self.num_frames + 1, size=1).astype(np.int64)
        else:  # eval: deterministic, evenly spaced
            speeds = np.ones(self.num_clips, dtype=np.int64)
            last = video_frames - self.num_frames
            if self.num_clips == 1:
                starts = np.array([last // 2], dtype=np.int64)
            else:
                starts = np.rint(np.linspace(0, last, self.num_clips)).astype(np.int64)
        steps = np.arange(self.num_frames, dtype=np.int64)
        frames = starts[:, None] + np.abs(speeds)[:, None] * steps[None, :]  # (K, T)
        frames = np.where(speeds[:, None] < 0, frames[:, ::-1], frames)
        # the loaders rely on this: DALI returns black frames, without an error, for indices out of range
        assert frames.min() >= 0 and frames.max() < video_frames, (frames, video_frames)
        speed_label = np.array([self._speed_index.get(int(s), -1) for s in speeds], dtype=np.int64)
        return ClipSet(frame_indices=np.ascontiguousarray(frames), speeds=speeds.astype(np.int64), speed_label=speed_label, order_label=order_label(speeds))
