"""Training that survives a change of cluster size: the global batch, resume on another world size, samples.jsonl.

* The global batch ``G`` (``--global-batch-size``, else ``--batch-size`` x world size) fixes the sequence of
  global batches and their clip draws (``pipeline/plan.py``); each of ``W`` ranks reads ``G / W`` of each.
* A checkpoint records ``G`` and the world size it was written on. ``--resume`` continues at the same global
  step on any world size that divides ``G``: model, optimizer and scheduler states are the same on every rank
  (DDP), so they load as they are; the loader skips the epoch's consumed global batches. Each rank's RNG streams
  (dropout) are restored exactly on the same world size; on another one they are re-derived for the new ranks
  from (seed, step, rank) (:func:`reseed`), since a rank of the old job has no counterpart in the new one.
* ``--log-samples``: rank 0 writes one line per step to ``OUT/samples.jsonl`` (:class:`SampleLog`).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from pipeline.plan import global_batch, rank_batch_size
from training import distributed
from training.errors import UsageError
from training.logs import MetricsLog


def global_batch_size(global_size: int, batch_size: int, world_size: int) -> int:
    """``G`` of a run: ``global_size`` (``--global-batch-size``) when set, else ``batch_size`` x ``world_size``."""
    return global_size or batch_size * world_size


def per_rank_batch_size(global_size: int, batch_size: int, world_size: int) -> int:
    """Samples per rank and step: ``global_size / world_size`` (refused in one line when it does not divide),
    else ``batch_size``."""
    if not global_size:
        return batch_size
    try:
        return rank_batch_size(global_size, world_size)
    except ValueError as err:
        raise UsageError(str(err)) from None


def checkpoint_global_batch(state: dict) -> int:
    """``G`` of a checkpoint (older checkpoints did not store it: their per-rank batch x their ranks)."""
    if "global_batch_size" in state:
        return int(state["global_batch_size"])
    return int(state["config"]["data"]["batch_size"]) * len(state["rng"])


def check_global_batch(state: dict, *, global_size: int, world_size: int) -> None:
    """Refuse, in one line, a checkpoint trained with another global batch (its batches cannot be continued)."""
    old_global, old_world = checkpoint_global_batch(state), len(state["rng"])
    if old_global != global_size:
        raise UsageError(f"cannot resume: the checkpoint was trained with a global batch of {old_global} samples "
                         f"({old_global // old_world} per rank x {old_world} ranks), this run's is {global_size} "
                         f"({global_size // world_size} per rank x {world_size}): pass --global-batch-size {old_global}")


def rank_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for ``rank``'s RNG streams from global step ``step`` on, after a resume on another world size."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def reseed(seed: int, step: int, rank: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's and Python's global RNGs from :func:`rank_seed`."""
    value = rank_seed(seed, step, rank)
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def rank_draws(batch: dict) -> list[tuple[str, dict]]:
    """This rank's samples of a step: (key, draws) per sample; draws = each clip's start (its lowest source frame,
    also for reversed clips), signed speed, and crop as [top, left, flip] (absent when the batch has no ``crops``)."""
    frames = batch["frame_indices"].cpu()  # (B, K, T)
    starts = frames.amin(dim=2).tolist()
    speeds = batch["speeds"].cpu().tolist()
    crops = batch["crops"].cpu().tolist() if "crops" in batch else None
    return [(key, {"starts": starts[i], "speeds": speeds[i], **({"crops": crops[i]} if crops is not None else {})})
            for i, key in enumerate(batch["key"])]


class SampleLog:
    """``OUT/samples.jsonl``: ``{"step": S, "keys": [...], "draws": [...]}`` per global step, in global batch order.

    Every rank calls :meth:`write` at every step (it gathers the ranks' slices); rank 0 writes. On resume the
    lines past the checkpoint's step are dropped first, as in ``metrics.jsonl``."""

    def __init__(self, out: Path, info: distributed.DistInfo, *, resume_step: int | None):
        self.info = info
        self._log = MetricsLog(Path(out) / "samples.jsonl", resume_step=resume_step) if info.is_main else None

    def write(self, step: int, batch: dict) -> None:
        samples = global_batch(distributed.all_gather_objects(rank_draws(batch), self.info))
        if self._log is not None:
            self._log.write({"step": step, "keys": [k for k, _ in samples], "draws": [d for _, d in samples]})

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
