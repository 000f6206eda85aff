"""Overlap the host-to-device copy of batch i+1 with the compute of batch i, and time the waits.

Batches are dicts of tensors (and lists of strings, passed through). Three cases, one code path:

* CPU training: batches are used as they come (no streams, no copies).
* GPU training, batches on the host (reference loader, DALI CPU): batch i+1 is pinned and copied on a
  side stream while the default stream computes batch i. Before batch i+1 is handed out, the compute
  stream waits for the side stream (``current_stream().wait_stream(side)``), and every copied tensor is
  marked as used by the compute stream (``record_stream``) so the caching allocator does not hand its
  memory to the next copy while the step still reads it.
* GPU training, batches already on the GPU (DALI mixed/GPU): no copy at all.

Fetching a batch never advances the training process's torch RNG (see ``_next``), so dropout masks depend
only on the step, not on when the loader started an epoch (exact resume).

:attr:`Prefetcher.last_wait_s` is how long the training loop was blocked waiting for the batch it just
received (loader time not hidden behind compute): the "data wait" of the progress display.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import torch

from pipeline.cuda_handover import hand_over


def _next(source: Iterator[dict]) -> dict | None:
    # A torch DataLoader draws its workers' base seed from the global RNG when an epoch starts. Forking
    # keeps that draw out of the training RNG stream, so a run resumed mid-epoch sees the same dropout masks.
    with torch.random.fork_rng(devices=[]):
        return next(source, None)


class Prefetcher:
    def __init__(self, batches: Iterable[dict], device: torch.device, *, channels_last: bool = False):
        """``channels_last``: on the GPU, store float clip tensors ``(..., C, T, H, W)`` channels-last, so that
        flattening the leading dims gives ``torch.channels_last_3d`` inputs."""
        self.batches = batches
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.last_wait_s = 0.0

    def __iter__(self) -> Iterator[dict]:
        source = iter(self.batches)
        if self.device.type != "cuda":
            while True:
                start = time.perf_counter()
                batch = _next(source)
                self.last_wait_s = time.perf_counter() - start
                if batch is None:
                    return
                yield batch
            return
        side = torch.cuda.Stream(self.device)
        start = time.perf_counter()
        pending = self._load(source, side)
        while pending is not None:
            hand_over(pending, side, torch.cuda.current_stream(self.device))  # the copy is finished before compute reads it
            batch = {}
            for key, value in pending.items():
                if self.channels_last and isinstance(value, torch.Tensor) and value.dim() >= 5 and value.is_floating_point():
                    value = value.movedim(-4, -1).contiguous().movedim(-1, -4)  # (..., C, T, H, W), C fastest
                batch[key] = value
            pending = self._load(source, side)  # starts the next copy; runs while the caller computes on `batch`
            self.last_wait_s = time.perf_counter() - start
            yield batch
            start = time.perf_counter()

    def _load(self, source: Iterator[dict], side: torch.cuda.Stream) -> dict | None:
        batch = _next(source)
        if batch is None:
            return None
        out = {}
        with torch.cuda.stream(side):
            for key, value in batch.items():
                if isinstance(value, torch.Tensor) and not value.is_cuda:
                    value = value if value.is_pinned() else value.pin_memory()
                    value = value.to(self.device, non_blocking=True)
                out[key] = value
        return out
