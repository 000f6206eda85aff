"""``build_loader``: the one entry point; batches from either backend look the same.

A backend turns this rank's work items (sample record + repeat count, see ``plan.py``) into a stream of
per-sample results, in order: either a :class:`SampleResult` or the :class:`BadSampleError` of that
sample. This module plans the epoch, assembles full batches from the stream (raising on a bad sample,
or skipping and counting it with ``skip_bad_samples``) and collates them. Which backend runs is decided by
``routing.choose_backend`` from the shards' codecs; the DALI backends produce their batches on a background
thread (``dali/background.py``), the reference backend in its DataLoader worker processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
import os

import numpy as np
import torch

from pipeline.views import normalize, normalize_constants
from pipeline.dali.background import background_batches
from pipeline.config import LoaderConfig
from pipeline.host_memory import keep_freed_memory
from pipeline.plan import SampleResult, eligible_samples, num_batches, rank_samples
from pipeline.stream import SampleStream
from pipeline.io.remote import RemoteOptions
from pipeline.routing import BACKENDS, CPU_DEFAULT, GPU_DECODE_THREADS, Route, check_backend, choose_backend, dali_threads
from pipeline.io.shard_reader import BadSampleError, SampleRecord, scan_shards

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "CPU_DEFAULT", "Collator", "VideoLoader", "build_loader"]


class Collator:
    """One batch, assembled sample by sample: each result's clips go into the batch tensor as the result
    arrives (normalized into float32 (K, 3, T, S, S), or copied as uint8 (K, T, S, S, 3) with
    ``normalized=False``), and ``result.release`` is called right after. So a backend that hands over a view
    of memory it reuses (a reference worker's ring slot) is read once, straight into the batch, and gets the
    memory back at once. ``capacity``: the most samples the batch holds."""

    def __init__(self, cfg: LoaderConfig, capacity: int, *, normalized: bool = True):
        self.cfg, self.capacity, self.normalized = cfg, capacity, normalized
        self.results: list[SampleResult] = []  # added so far (their clips are in the batch tensor)
        self._clips: torch.Tensor | None = None  # (capacity, ...) made for the first sample
        self._scale_shift = None
        self._shape = None  # (K, T, S, S, 3) of every sample, from the first

    def __len__(self) -> int:
        return len(self.results)

    def add(self, result: SampleResult) -> None:
        clips, i = result.clips, len(self.results)  # (K, T, S, S, 3) uint8
        try:
            if i == self.capacity:
                raise ValueError(f"the batch is full ({self.capacity} samples)")
            if self._clips is None:
                self._shape = clips.shape
                k, t, h, w, c = clips.shape
                if self.normalized:
                    self._clips = torch.empty((self.capacity, k, c, t, h, w), dtype=torch.float32, device=clips.device)
                    self._scale_shift = normalize_constants(self.cfg.mean, self.cfg.std, clips.device)
                else:
                    self._clips = torch.empty((self.capacity, k, t, h, w, c), dtype=torch.uint8, device=clips.device)
            elif clips.shape != self._shape:
                raise ValueError(f"sample {result.key!r} has clips of shape {tuple(clips.shape)}, the batch's are {tuple(self._shape)}")
            if self.normalized:
                normalize(clips, self.cfg.mean, self.cfg.std, out=self._clips[i], scale_shift=self._scale_shift)
            else:
                self._clips[i].copy_(clips)
        finally:  # a sample that cannot go in gives the memory back too
            if result.release is not None:
                result.release()
        result.clips, result.release = None, None  # the batch holds them now; a released slot is reused
        self.results.append(result)

    def finish(self, *, pin: bool = False) -> dict:
        """The batch dict of the samples added (see docs/pipeline.md)."""
        results = self.results
        if not results:
            raise ValueError("no sample was added to the batch")
        clips = self._clips if len(results) == self.capacity else self._clips[: len(results)]
        if pin:
            clips = clips.pin_memory()
        batch = {
            "clips": clips,
            "speeds": torch.as_tensor(np.stack([r.speeds for r in results]), dtype=torch.int64),
            "speed_label": torch.as_tensor(np.stack([r.speed_label for r in results]), dtype=torch.int64),
            "order_label": torch.as_tensor([r.order_label for r in results], dtype=torch.int64),
            "label": torch.as_tensor([r.label for r in results], dtype=torch.int64),
            "frame_indices": torch.as_tensor(np.stack([r.frame_indices for r in results]), dtype=torch.int64),
            "key": [r.key for r in results],
            "video_id": [r.video_id for r in results],
        }
        if all(r.crops is not None for r in results):  # every backend's results carry them
            batch["crops"] = torch.as_tensor(np.stack([r.crops for r in results]), dtype=torch.int64)
        return batch


class VideoLoader:
    """Iterable of batch dicts (see docs/pipeline.md). ``len()`` is the batches per epoch on this rank."""

    def __init__(self, records, cfg: LoaderConfig, *, route: Route, rank: int, world_size: int, num_workers: int,
                 device: torch.device | None, normalized: bool = True, gpu_decode_threads: int = GPU_DECODE_THREADS,
                 reuse_host_memory: bool = False):
        self.cfg, self.rank, self.world_size, self.num_workers = cfg, rank, world_size, num_workers
        self.device, self.normalized = device, normalized
        self.backend, self.route_reason = route.backend, route.reason
        self.decode_threads: int | None = None
        """DALI backends: the decoder's thread count (on a GPU derived from its NVDEC engines unless given)."""
        self.epoch = self.start_batch = 0
        self.eligible, excluded = eligible_samples(records, cfg)
        self.stats = {"samples": len(records), "excluded": sum(excluded.values()), "excluded_reasons": dict(excluded),
                      "skipped": 0, "skipped_samples": []}
        self._num_rank_samples = len(rank_samples(self.eligible, cfg, epoch=0, rank=rank, world_size=world_size))
        self._stream: SampleStream
        if route.backend.startswith("dali"):
            from pipeline.dali.stream import DaliStream

            device_id, engines = None, None
            if route.backend == "dali-gpu":
                device_id = _cuda_index(device)
                if gpu_decode_threads == 0:  # derived from what the GPU reports
                    from pipeline.dali.nvdec import nvdec_engines

                    engines = nvdec_engines({str(r.meta.get("codec")) for r in records}, device_id)
            threads = dali_threads(route.backend, num_workers=num_workers, gpu_decode_threads=gpu_decode_threads,
                                   nvdec_engines=engines, cpus=len(os.sched_getaffinity(0)))
            self.decode_threads = threads
            self._stream = DaliStream(cfg, device_id=device_id, num_threads=threads, cut_workers=num_workers)
            self._batch_device = torch.device("cuda", device_id) if device_id is not None else None
        else:
            from pipeline.reference.stream import ReferenceStream

            self._stream = ReferenceStream(cfg, num_workers=num_workers)
        if reuse_host_memory and normalized and route.backend != "dali-gpu":  # batches are normalized into host memory here
            keep_freed_memory()
        if route.reason:
            log.warning("loader: %s", route.reason)
        log.info("loader: backend %s, mode %s, rank %d/%d: %d of %d samples eligible, %d batches per epoch",
                 self.backend, cfg.mode, rank, world_size, len(self.eligible), len(records), len(self))

    @property
    def decoded_frames_per_clip(self) -> float | None:
        """DALI backends: frames the decoder was asked to decode per clip returned, so far (None otherwise)."""
        return self._stream.decoded_frames_per_clip()

    def __len__(self) -> int:
        return num_batches(self._num_rank_samples, self.cfg)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Reshuffle and redraw for ``epoch`` (call before iterating, like ``DistributedSampler``).
        ``start_batch`` (pretrain/finetune): iterating then starts at this batch of the epoch and yields the
        ``len(self) - start_batch`` batches from there, without reading the ones before (a resumed run skipping
        the global batches it consumed; re-draws for skipped bad samples then wrap around from there)."""
        if not 0 <= start_batch <= len(self) or (start_batch and self.cfg.mode == "eval"):
            raise ValueError(f"start_batch must be in [0, {len(self)}] (and 0 in eval mode), got {start_batch}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __iter__(self):
        if self.backend.startswith("dali"):  # DALI's host work off the training thread
            return background_batches(self._batches, device=self._batch_device)
        return self._batches()

    def _batches(self):
        cfg = self.cfg
        samples = rank_samples(self.eligible, cfg, epoch=self.epoch, rank=self.rank, world_size=self.world_size)
        wanted = len(self) - self.start_batch
        samples = samples[self.start_batch * cfg.batch_size:]
        pin = self.device is not None and self.device.type == "cuda" and self.backend != "dali-gpu"  # CPU tensors
        batch = Collator(cfg, cfg.batch_size, normalized=self.normalized)
        emitted = failures_in_a_row = 0
        if wanted == 0:
            return
        count = wanted * cfg.batch_size
        # training reads epoch after epoch: a backend with long-lived workers starts on the next one while this one ends
        upcoming = None if cfg.mode == "eval" else (
            rank_samples(self.eligible, cfg, epoch=self.epoch + 1, rank=self.rank, world_size=self.world_size), self.epoch + 1, count)
        stream = self._stream.results(samples, epoch=self.epoch, count=count, upcoming=upcoming)
        try:
            for result in stream:
                if isinstance(result, BadSampleError):
                    if not cfg.skip_bad_samples:
                        raise result
                    self._count_skip(result)
                    failures_in_a_row += 1
                    if failures_in_a_row > len(samples):
                        raise RuntimeError(f"rank {self.rank}: every sample failed ({self.stats['skipped']} skipped); last: {result}")
                    continue
                failures_in_a_row = 0
                batch.add(result)
                if len(batch) == cfg.batch_size:
                    yield batch.finish(pin=pin)
                    batch, emitted = Collator(cfg, cfg.batch_size, normalized=self.normalized), emitted + 1
                    if emitted == wanted:
                        return
            if len(batch):  # eval only: the last, smaller batch
                yield batch.finish(pin=pin)
        finally:
            stream.close()

    def close(self) -> None:
        """Stop the backend's worker processes now (they otherwise live until the loader is garbage-collected)."""
        self._stream.close()

    def _count_skip(self, error: BadSampleError) -> None:
        self.stats["skipped"] += 1
        self.stats["skipped_samples"].append({"shard": error.shard, "key": error.key, "reason": error.reason})
        log.warning("skipped %s", error)


def smallest_sizes(records) -> dict[str, tuple[int, int]]:
    """codec -> (least width, least height) over ``records``, from their json (what NVDEC's limits are checked on)."""
    smallest: dict[str, tuple[int, int]] = {}
    for r in records:
        codec, width, height = str(r.meta.get("codec")), int(r.meta["width"]), int(r.meta["height"])
        w, h = smallest.get(codec, (width, height))
        smallest[codec] = (min(w, width), min(h, height))
    return smallest


def _cuda_index(device: torch.device | None) -> int:
    """The GPU index of ``device`` for DALI's ``device_id``: its own index, else the current CUDA device."""
    if device is not None and device.type == "cuda" and device.index is not None:
        return device.index
    return torch.cuda.current_device()


def build_loader(shards: list[str], cfg: LoaderConfig, *, backend: str = "auto", rank: int = 0, world_size: int = 1,
                 num_workers: int = 2, device: torch.device | str | None = None, normalized: bool = True,
                 remote: RemoteOptions | None = None, gpu_decode_threads: int = GPU_DECODE_THREADS,
                 reuse_host_memory: bool = False,
                 select: Callable[[list[SampleRecord]], list[SampleRecord]] | None = None) -> VideoLoader:
    """A loader over ``shards`` (tar paths or URLs, see :func:`list_shards`) for this rank.

    ``backend``: ``"dali"`` (GPU ``mixed`` decoder when CUDA is available, else DALI's CPU decoder),
    ``"reference"`` (torch DataLoader workers decoding with PyAV) or ``"auto"`` (DALI on a GPU, ``CPU_DEFAULT`` otherwise);
    codecs the GPU decoder cannot take are routed to a host path (``routing.choose_backend``; ``loader.backend``
    and ``loader.route_reason`` say which ran and why).
    ``num_workers``: DataLoader worker processes (reference); with DALI, the processes that cut local samples'
    streams off the training process (0: cut on the loader thread) and, on the CPU, DALI's decoder threads.
    ``gpu_decode_threads``: the DALI ``mixed`` decoder's threads (videos decoded at once on the GPU); 0 derives
    it from the GPU's NVDEC engines (``routing.gpu_decode_threads_for``; ``loader.decode_threads`` says what ran).
    ``device``: where training runs; ``cuda`` makes the reference backend pin its batches, and ``cuda:N`` is the
    GPU the ``mixed`` decoder runs on (``cuda`` without an index, or None: the current CUDA device). The loader
    reads no environment variable: under torchrun, pass this rank's device.
    ``reuse_host_memory``: raise glibc malloc's mmap threshold for the whole process so batch buffers are
    reused instead of faulted in anew per batch (``host_memory.py``; 6x less time normalizing a sample, at the
    price of keeping peak batch memory mapped). Off by default, because it changes the process, not the
    loader; ``train.py`` and the benchmarks turn it on.
    ``normalized=False`` returns uint8 clips (B, K, T, S, S, 3) before normalization (preview, tests).
    ``remote``: how URL shards are read (storage options, retries, timeout, cache; see ``io/remote.py``).
    ``select``: keeps a subset of the scanned samples before anything else (e.g. ``train.py``'s validation
    videos carved out of the train split, or the rest of it); it gets every sample of ``shards`` at once.
    """
    check_backend(backend)  # before the shards are scanned
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if isinstance(device, str):
        device = torch.device(device)
    records, bad = scan_shards(list(shards), skip_bad_samples=cfg.skip_bad_samples, remote=remote)
    if select is not None:
        records = select(records)
    codecs = {str(r.meta.get("codec")) for r in records}
    route = choose_backend(backend, codecs, cuda=torch.cuda.is_available(), smallest=smallest_sizes(records))
    loader = VideoLoader(records, cfg, route=route, rank=rank, world_size=world_size, num_workers=num_workers,
                         device=device, normalized=normalized, gpu_decode_threads=gpu_decode_threads,
                         reuse_host_memory=reuse_host_memory)
    for error in bad:
        loader._count_skip(error)
    return loader
