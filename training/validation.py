"""Validation during fine-tuning: labelled videos held out of the train split, scored every ``--val-every``
epochs and at the end of the run, and the best checkpoint so far (``best.pt``), chosen by their video accuracy.

The held-out videos are a seeded fraction of the train split's labelled videos, drawn by ``video_id`` so that
the segments of one video stay on one side. They are taken out of the training set, and the test split is
never read while fine-tuning: the test numbers of ``train.py eval --init OUT/best.pt`` played no part in
choosing the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.io.shard_reader import SampleRecord
from training import distributed
from training.evaluate import EvalMode, gather_outputs
from training.metrics import clip_and_video_accuracy

#: What chooses the best checkpoint: the validation videos' accuracy from the mean of their clips' logits.
VAL_METRIC = "video_acc"
#: Mixed into the seed of the held-out draw, so it is not the same stream as the loader's draws from that seed.
_HOLDOUT_STREAM = 0x76616C


def validation_videos(records: Sequence[SampleRecord], fraction: float, seed: int, *, split: str = "train") -> frozenset[str]:
    """The ``video_id`` of the held-out videos: ``ceil(fraction * V)`` of the V labelled videos among ``records``,
    drawn with ``seed``. The same set whatever the order or sharding of the records; empty for ``fraction`` 0.
    Raises ValueError (naming ``--val-fraction``) when nothing would be held out or nothing left to train on."""
    if fraction == 0:
        return frozenset()
    ids = sorted({r.video_id for r in records if r.label >= 0})
    count = math.ceil(fraction * len(ids))
    if not ids:
        raise ValueError(f"--val-fraction {fraction}: split {split!r} has no labelled video to validate on; pass --val-fraction 0")
    if count >= len(ids):
        raise ValueError(f"--val-fraction {fraction} holds out {count} of the {len(ids)} labelled videos of split {split!r}, "
                         f"leaving none to train on: lower it, or pass --val-fraction 0 to fine-tune without validation")
    order = np.random.default_rng([int(seed), _HOLDOUT_STREAM]).permutation(len(ids))
    return frozenset(ids[i] for i in order[:count])


@dataclass(frozen=True)
class Holdout:
    """The two sides of the train split, as ``build_loader(select=...)`` functions over its scanned records."""

    fraction: float
    seed: int
    split: str = "train"

    def _held_out(self, records: Sequence[SampleRecord]) -> frozenset[str]:
        return validation_videos(records, self.fraction, self.seed, split=self.split)

    def training(self, records: list[SampleRecord]) -> list[SampleRecord]:
        """Every sample except those of the held-out videos."""
        held_out = self._held_out(records)
        return [r for r in records if r.video_id not in held_out]

    def validation(self, records: list[SampleRecord]) -> list[SampleRecord]:
        """The samples of the held-out videos only."""
        held_out = self._held_out(records)
        return [r for r in records if r.video_id in held_out]


@dataclass
class BestSoFar:
    """The best validation of the run so far: its ``VAL_METRIC`` value, epoch (0-based, as in metrics.jsonl) and step.
    Kept in checkpoint.pt (plain types) so that a resumed run goes on comparing against it."""

    value: float | None = None
    epoch: int | None = None
    step: int | None = None

    def offer(self, value: float, *, epoch: int, step: int) -> bool:
        """Keep ``value`` if it beats every earlier one and say so. A tie keeps the earlier checkpoint (fewer
        steps fitted to the train split); NaN never wins."""
        if math.isnan(value) or (self.value is not None and value <= self.value):
            return False
        self.value, self.epoch, self.step = float(value), int(epoch), int(step)
        return True

    def to_dict(self) -> dict:
        return {"value": self.value, "epoch": self.epoch, "step": self.step}

    @classmethod
    def from_dict(cls, d: dict | None) -> "BestSoFar":
        return cls(**(d or {}))


def is_due(step: int, *, steps_per_epoch: int, total_steps: int, every_epochs: int) -> bool:
    """Whether to validate after optimizer step ``step``: at the end of every ``every_epochs``-th epoch (never
    when 0) and after the run's last step."""
    if step >= total_steps:
        return True
    return every_epochs > 0 and step % steps_per_epoch == 0 and (step // steps_per_epoch) % every_epochs == 0


def validate(model: torch.nn.Module, loader, *, device: torch.device, amp: bool, channels_last: bool,
             info: distributed.DistInfo) -> dict:
    """Clip and video accuracy and the mean clip cross-entropy (``loss``) of the classifier ``model`` (unwrapped)
    on the held-out videos, with the eval protocol's clips; every rank must call it."""
    def logits(batch: dict) -> dict[str, torch.Tensor]:
        b, k = batch["clips"].shape[:2]
        return {"logits": model(batch["clips"].flatten(0, 1)).reshape(b, k, -1)}  # (B, K, C)

    with EvalMode(model):
        out = gather_outputs(loader, logits, device=device, amp=amp, info=info, channels_last=channels_last)
    result = clip_and_video_accuracy(out["video_id"], out["logits"], out["label"])
    k = out["logits"].shape[1]
    result["loss"] = F.cross_entropy(out["logits"].flatten(0, 1), out["label"].repeat_interleave(k), ignore_index=-1).item()
    return result
