"""Which samples a rank reads in an epoch, and what is drawn for each (backend-independent).

* Eligible samples: those the sampler can use (pretext: >= K fitting speeds; train/eval: >= T frames),
  sorted by key; the others are excluded at build time, counted by reason and logged.
* pretrain/finetune: the eligible list is permuted with (seed, epoch), rank ``r`` takes ``order[r::world_size]``
  cut to ``n // world_size`` samples, so ranks are disjoint and equally long, and yields
  ``n // world_size // batch_size`` full batches (the remainder is dropped). Samples skipped as bad are
  replaced by re-drawing the rank's samples from its start (``repeat`` 1, 2, ...) so every rank still
  yields exactly ``len(loader)`` batches and DDP collectives never wait on a rank that ran out.
* The global order: with ``G = batch_size * world_size``, global batch ``b`` of an epoch is
  ``order[b * G:(b + 1) * G]`` and rank ``r``'s batch ``b`` is its positions ``r, r + W, r + 2W, ...``
  (the layout above, read batch by batch). ``order`` depends on (seed, epoch) only and every draw on (seed,
  epoch, key, repeat) only, so the sequence of global batches, and each sample's clips, crops and flips, are
  a function of (seed, epoch, G): the same on any world size, worker count or backend (:func:`global_batch`
  puts the ranks' slices back in that order). Not covered: re-draws that replace skipped bad samples
  (``skip_bad_samples``) are taken per rank, so a run that skips samples sees world-size-dependent
  replacements from the first skipped one on.
* eval: no shuffle, no drop: rank ``r`` takes sorted keys ``[r::world_size]``, so every video is seen
  exactly once across ranks; the last batch may be smaller and ranks may differ by one batch.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.views import View, assemble_clips, draw_views
from pipeline.config import LoaderConfig
from pipeline.sampler import ClipSet, SpeedSampler, sample_rng
from pipeline.io.shard_reader import BadSampleError, SampleRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplePlan:
    """Everything drawn for one sample: its clips, the frames to decode once, and the clips' views."""

    record: SampleRecord
    clips: ClipSet
    union: np.ndarray
    """Sorted unique source frames of all clips (what the decoder is asked for), int64."""
    positions: np.ndarray
    """(K, T) indices into ``union``: ``union[positions] == clips.frame_indices``."""
    views: list[View]


def plan_sample(record: SampleRecord, cfg: LoaderConfig, epoch: int, repeat: int = 0) -> SamplePlan:
    """Draw the clips and views of ``record`` from its own generator (seed, epoch, key, repeat)."""
    rng = sample_rng(cfg.seed, epoch, record.key, repeat)
    clips = SpeedSampler.from_config(cfg).sample(record.video_frames, rng)
    views = draw_views(rng, len(clips.speeds), record.meta["height"], record.meta["width"], cfg)
    union, positions = clips.union()
    return SamplePlan(record, clips, union, positions, views)


def eligible_samples(records: list[SampleRecord], cfg: LoaderConfig) -> tuple[list[SampleRecord], collections.Counter]:
    """The records the sampler can use, and a count of the others by reason (also logged)."""
    sampler = SpeedSampler.from_config(cfg)
    keep, excluded = [], collections.Counter()
    for record in records:
        reason = sampler.exclusion_reason(record.video_frames)
        if reason is None:
            keep.append(record)
        else:
            excluded[reason] += 1
            log.debug("excluding %s (%s): %s", record.key, record.shard, reason)
    for reason, count in excluded.items():
        log.info("excluded %d sample(s) in %s mode: %s", count, cfg.mode, reason)
    return keep, excluded


def rank_samples(eligible: list[SampleRecord], cfg: LoaderConfig, *, epoch: int, rank: int, world_size: int) -> list[SampleRecord]:
    """This rank's samples for ``epoch``, in reading order (see the module docstring)."""
    if cfg.mode == "eval":
        return eligible[rank::world_size]
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(eligible)) if cfg.shuffle else np.arange(len(eligible))
    per_rank = len(eligible) // world_size
    return [eligible[i] for i in order[rank::world_size][:per_rank]]


def rank_batch_size(global_batch_size: int, world_size: int) -> int:
    """Samples per rank and step for a global batch of ``global_batch_size`` samples over ``world_size`` ranks."""
    if global_batch_size < 1 or global_batch_size % world_size:
        raise ValueError(f"--global-batch-size {global_batch_size} is not a multiple of the world size {world_size}: "
                         f"pick a global batch that every world size the job may run on divides")
    return global_batch_size // world_size


def global_batch(rank_parts: list[list]) -> list:
    """One global batch from its ranks' slices (``rank_parts[r]``: rank ``r``'s items of the step, in its batch
    order), in global batch order: rank ``r``'s ``i``-th item is position ``r + i * world_size``."""
    if len({len(part) for part in rank_parts}) > 1:
        raise ValueError(f"ranks hold slices of different lengths {[len(p) for p in rank_parts]}: not one global batch")
    return [item for items in zip(*rank_parts) for item in items]


def num_batches(num_rank_samples: int, cfg: LoaderConfig) -> int:
    if cfg.mode == "eval":
        return -(-num_rank_samples // cfg.batch_size)
    return num_rank_samples // cfg.batch_size


def record_and_repeat(samples: list[SampleRecord], i: int) -> tuple[SampleRecord, int]:
    """The ``i``-th item a rank reads: (record, repeat). Past the end of ``samples`` (pretrain/finetune only)
    come re-draws of the same samples with ``repeat`` 1, 2, ..., which top up for skipped bad samples."""
    return samples[i % len(samples)], i // len(samples)


def epoch_results(samples: list[SampleRecord], cfg: LoaderConfig, count: int, run):
    """Results of a rank's epoch: ``run(indices)`` yields one result per work item index (see
    :func:`record_and_repeat`). eval: every sample once. pretrain/finetune: exactly enough items for ``count`` good
    results; each bad one is replaced by the next re-draw, so no work is wasted past the epoch's end."""
    if cfg.mode == "eval":
        yield from run(range(len(samples)))
        return
    start, missing = 0, count
    while missing > 0 and samples:
        stop = start + missing
        for result in run(range(start, stop)):
            missing -= not isinstance(result, BadSampleError)
            yield result
        start = stop


@dataclass
class SampleResult:
    """One decoded sample: its clips and labels."""

    key: str
    video_id: str
    label: int
    frame_indices: np.ndarray  # (K, T) source frame indices
    speeds: np.ndarray  # (K,)
    speed_label: np.ndarray  # (K,)
    order_label: int
    clips: torch.Tensor  # uint8 (K, T, S, S, 3); normalized per batch by the loader
    release: Callable[[], None] | None = None
    """Set when ``clips`` is a view of memory the backend reuses (a slot of a reference worker's shared-memory
    ring): the loader calls it once it has copied ``clips`` into its batch, and the memory is not reused
    before. None when ``clips`` is the result's own."""
    crops: np.ndarray | None = None
    """(K, 3) int64: each clip's view as (top, left, flip) in pixels of the resized frame (:class:`View`); what
    ``--log-samples`` records. None only in results built by hand (then the batch has no ``crops``)."""


def check_decoded(plan: SamplePlan, decoded: torch.Tensor) -> None:
    """Raise the sample's BadSampleError unless ``decoded`` has the shape of ``plan.union``'s frames."""
    record = plan.record
    expected = (len(plan.union), record.meta["height"], record.meta["width"], 3)
    if tuple(decoded.shape) != expected:
        raise BadSampleError(record.shard, record.key, f"decoder returned frames of shape {tuple(decoded.shape)}, expected {expected}")


def finish_sample(plan: SamplePlan, decoded: torch.Tensor) -> SampleResult:
    """Check a decoder's output for ``plan.union`` and cut, resize, crop and flip the clips."""
    check_decoded(plan, decoded)
    return sample_result(plan, assemble_clips(decoded, plan.positions, plan.views))


def sample_result(plan: SamplePlan, clips: torch.Tensor) -> SampleResult:
    """The result of ``plan`` once its clips, uint8 (K, T, S, S, 3), are cut."""
    record, c = plan.record, plan.clips
    crops = np.array([(v.top, v.left, int(v.flip)) for v in plan.views], dtype=np.int64).reshape(-1, 3)
    return SampleResult(record.key, record.video_id, record.label, c.frame_indices, c.speeds, c.speed_label, c.order_label, clips,
                        crops=crops)
