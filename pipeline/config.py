"""Clip settings and the loader's one configuration object (shared by both backends, the preview and the benchmark).

:class:`ClipConfig` is the one definition of how clips are cut (frames, speeds, clips per sample, sizes);
``LoaderConfig`` and ``train.py``'s data options both extend it, so they share its defaults and checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MODES = ("pretrain", "finetune", "eval")
EVAL_VIEWS = ("full", "center")
#: Forward and reverse of 1, 2, 4 and 8 frame steps (docs/design.md §2).
DEFAULT_SPEEDS: tuple[int, ...] = (-8, -4, -2, -1, 1, 2, 4, 8)
#: Largest K: the sorting label has K! classes (720 at K = 6).
MAX_CLIPS = 6


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut from a video (docs/design.md §2). Validated on construction."""

    num_frames: int = 16
    """T, frames per clip."""

    speeds: tuple[int, ...] = DEFAULT_SPEEDS
    """Signed playback speeds (frame steps; negative = reversed). A clip's speed class is its index here."""

    num_clips: int = 4
    """K, clips per pretext sample (distinct speeds); the sorting head has K! classes."""

    num_eval_clips: int = 10
    """Clips per video in eval mode, starts evenly spaced from the first to the last possible start (video accuracy averages their logits)."""

    resize: int = 128
    """Short side, in pixels, that frames are resized to before the random (or center) crop."""

    crop_size: int = 112
    """Output height = width, in pixels."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "speeds", tuple(int(s) for s in self.speeds))
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if not self.speeds or 0 in self.speeds or len(set(self.speeds)) != len(self.speeds):
            raise ValueError(f"speeds must be distinct non-zero integers, got {self.speeds}")
        if not 1 <= self.num_clips <= min(len(self.speeds), MAX_CLIPS):
            raise ValueError(f"num_clips must be in [1, min(len(speeds)={len(self.speeds)}, {MAX_CLIPS})] "
                             f"(distinct speeds per sample; the order label has K! classes), got {self.num_clips}")
        if self.num_eval_clips < 1:
            raise ValueError(f"num_eval_clips must be >= 1, got {self.num_eval_clips}")
        if self.crop_size < 1 or self.resize < self.crop_size:
            raise ValueError(f"need 1 <= crop_size <= resize, got crop_size={self.crop_size}, resize={self.resize}")

    def clip_settings(self) -> dict:
        """This object's :class:`ClipConfig` fields, to build another config that extends it."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ClipConfig)}


@dataclass(frozen=True)
class LoaderConfig(ClipConfig):
    """What a batch holds and how its clips are drawn (docs/design.md §2). Validated on construction."""

    mode: str = "pretrain"
    """``"pretrain"``: ``num_clips`` clips at distinct speeds per video (self-supervised labels);
    ``"finetune"``: one speed-1 clip per video at a random start, with the action label;
    ``"eval"``: ``num_eval_clips`` evenly spaced speed-1 clips per video, every video exactly once."""

    batch_size: int = 8
    """Videos per batch (each contributes K clips)."""

    augment: bool = True
    """True: resize the short side to ``resize``, take a random ``crop_size`` square and flip horizontally
    with probability 1/2, drawn once per clip (the same for all its frames). False: no randomness in
    space; see ``eval_view``."""

    eval_view: str = "full"
    """Only when ``augment`` is False. ``"full"``: the whole frame resized to ``crop_size`` x ``crop_size``
    (aspect not kept; every pixel column survives, which the frame-numbered test videos rely on).
    ``"center"``: short side resized to ``resize``, then the center ``crop_size`` square (peers' eval view)."""

    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    """Per-channel (RGB) mean subtracted after scaling pixels to [0, 1]."""

    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    """Per-channel (RGB) standard deviation divided by after subtracting ``mean``."""

    seed: int = 0
    """Root of every random draw: clip speeds/starts/crops come from (seed, epoch, sample key), the
    epoch's sample order from (seed, epoch)."""

    shuffle: bool = True
    """Shuffle the sample order every epoch (pretrain/finetune). Eval order is always fixed (sorted keys)."""

    skip_bad_samples: bool = False
    """False: a bad sample (unreadable bytes, invalid json, wrong frame count) raises ``BadSampleError``
    naming the shard, key and reason. True: it is skipped, counted (``loader.stats``) and logged."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.eval_view not in EVAL_VIEWS:
            raise ValueError(f"eval_view must be one of {EVAL_VIEWS}, got {self.eval_view!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std must have 3 entries and std > 0, got {self.mean}, {self.std}")

    @property
    def clips_per_sample(self) -> int:
        """K of the output: ``num_clips`` (pretext), 1 (train) or ``num_eval_clips`` (eval)."""
        return {"pretrain": self.num_clips, "finetune": 1, "eval": self.num_eval_clips}[self.mode]
