"""Reference backend: ``torch.utils.data.DataLoader`` worker processes, each reading a sample's bytes from its
shard, drawing its clips with the shared sampler and decoding the union of their frames in one pass
(``decode.pyav_union_decode``: single-threaded libavcodec that jumps to a keyframe only when that saves
decoding; torchcodec when frames are reordered). The CPU default, the correctness oracle for DALI, and a
benchmark baseline.

When the stored frames already have the size the views crop from (shards built at ``--short-side`` equal
to the loader's ``resize``, the usual case), each decoded frame's crops are copied as they come into the
sample's output tensor, a slot of the worker's shared-memory ring (:class:`OutputRing`), which the
training process maps once and normalizes each sample out of, into its batch. For yuv420p frames the crops
are cut in YUV and only they are converted to RGB, one call per sample (``yuv_clips.YuvClipWriter``); other
formats are converted whole and cut (``views.ClipWriter``). Otherwise the frames are stacked, resized
once and cut (``views.assemble_clips``), exactly as the DALI backend does."""

from __future__ import annotations

import collections
import dataclasses
import functools
import multiprocessing

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from pipeline.views import ClipWriter, clip_buffer, clip_shape, needs_resize
from pipeline.config import LoaderConfig
from pipeline.reference.decode import pyav_union_decode, pyav_union_frames, rgb_view, torchcodec_decoder
from pipeline.plan import SamplePlan, SampleResult, epoch_results, finish_sample, plan_sample, sample_result, record_and_repeat
from pipeline.io.shard_reader import BadSampleError, SampleRecord, check_stream
from pipeline.reference.yuv_clips import YuvClipWriter


def load_sample(record: SampleRecord, repeat: int, cfg: LoaderConfig, epoch: int, *, ring: OutputRing | None = None):
    """One sample end to end on the CPU; a problem with the sample comes back as its BadSampleError.
    ``ring``: where a worker puts the clips when it has a free slot (see :class:`OutputRing`); a new tensor
    otherwise."""
    try:
        plan = plan_sample(record, cfg, epoch, repeat)
        check = functools.partial(check_stream, record)
        video = record.open_video()  # read on demand: only the packets the clips need are read
        try:
            try:
                if not needs_resize(plan.views, record.meta["height"], record.meta["width"]):
                    return sample_result(plan, _write_clips(plan, video, check, ring))
                decoded = torch.from_numpy(pyav_union_frames(video, plan.union, gop=record.meta.get("gop"), check=check))
            except ValueError:  # frames reordered (B-frames) or irregular timestamps: torchcodec handles any order
                decoder = torchcodec_decoder(record.read_video())
                info = decoder.metadata
                check(codec=info.codec, width=info.width, height=info.height, declared_frames=info.num_frames)
                decoded = decoder.get_frames_at([int(i) for i in plan.union]).data
        except BadSampleError:
            raise
        except Exception as e:  # noqa: BLE001 -- any decoder failure is this sample's fault; name it
            raise BadSampleError(record.shard, record.key, f"decoding failed: {type(e).__name__}: {e}") from None
        finally:
            video.close()
        result = finish_sample(plan, decoded)
        slot = ring.take(tuple(result.clips.shape)) if ring is not None else None
        if slot is not None:  # resized clips are new tensors: one copy into the ring beats a new shared segment
            result.clips = slot.copy_(result.clips)
        return result
    except BadSampleError as e:
        return e
    except OSError as e:
        return BadSampleError(record.shard, record.key, f"read failed: {e}")


class _RgbWriter(ClipWriter):
    """ClipWriter fed with decoded ``av.VideoFrame``s: each is converted to RGB whole, then cut."""

    def put(self, position: int, frame) -> None:
        super().put(position, rgb_view(frame))

    def finish(self) -> torch.Tensor:
        return self.clips


def _write_clips(plan: SamplePlan, video, check, ring: OutputRing | None = None) -> torch.Tensor:
    """Decode ``plan.union`` and cut each frame's crops into the clips as it comes: uint8 (K, T, S, S, 3),
    a slot of ``ring`` when it has a free one of that shape. yuv420p frames go through ``YuvClipWriter``
    (only the crops are converted to RGB), others through ``ClipWriter``. ``video``: encoded bytes or a file
    (see ``pyav_union_decode``, whose ValueError for reordered frames or irregular timestamps passes through)."""
    shape = clip_shape(plan.positions, plan.views[0].size)
    out = ring.take(shape) if ring is not None else None
    try:
        return _decode_into(plan, video, check, clip_buffer(plan.positions, plan.views[0].size, out))
    except BaseException:
        if out is not None:
            ring.release(out)
        raise


def _decode_into(plan: SamplePlan, video, check, out: torch.Tensor) -> torch.Tensor:
    writer = None
    for position, frame in pyav_union_decode(video, plan.union, gop=plan.record.meta.get("gop"), check=check, rgb=False):
        if writer is None:
            if YuvClipWriter.accepts(frame, plan.views):
                writer = YuvClipWriter(plan.positions, plan.views, frame, out=out)
            else:
                writer = _RgbWriter(plan.positions, plan.views, out=out)
        try:
            writer.put(position, frame)
        except ValueError as e:
            raise BadSampleError(plan.record.shard, plan.record.key, f"decoder returned {e}") from None
    if writer is None or writer.missing():
        missing = plan.union if writer is None else plan.union[writer.missing()]
        raise BadSampleError(plan.record.shard, plan.record.key, f"decoder did not return frames {missing[:5]}")
    return writer.finish()


class OutputRing:
    """Shared-memory slots that one worker process writes its samples' clips into, mapped once by the
    training process, which normalizes a sample straight out of its slot into the batch (``loader.Collator``)
    and then frees the slot.

    A slot is stored channel-first, (K, 3, T, S, S), and handed to the writers as the (K, T, S, S, 3) view
    of it that every clip writer takes: ``YuvClipWriter`` (yuv420p frames) converts to planar RGB and copies
    each channel in one block; ``ClipWriter`` (other formats) writes each frame's crop through the view. The
    training process then converts contiguous blocks without a transposing pass. The training process's work
    per sample is what caps how far workers scale: it runs once per sample whatever the number of workers.

    Why a ring: a tensor handed from a worker to the training process otherwise lives in a new shared-memory
    segment per sample, created, faulted in page by page and unmapped again (2.8 ms per 2.4 MB pretext
    sample in the worker, against 0.1 ms for memory already mapped; one thread, this project's 2-core
    machine), and mapped afresh on the other side. A slot is taken by the worker (``busy`` = 1) and freed
    by the training process (``busy`` = 0) once the sample is in a batch; the worker never reuses a busy
    slot. When no slot is free (more samples on their way than ``slots``) or a sample has another shape,
    the worker allocates as before: slower, never wrong."""

    def __init__(self, slots: int):
        self.slots = slots
        self.clips: torch.Tensor | None = None  # (slots, K, 3, T, S, S) uint8, shared; made on first use
        self.busy: torch.Tensor | None = None  # (slots,) uint8, shared
        self.announced = False  # whether the training process has been sent the tensors

    def take(self, shape: tuple) -> torch.Tensor | None:
        """A free slot for clips of ``shape`` (K, T, S, S, 3), marked busy: a (K, T, S, S, 3) view of
        channel-first memory; or None."""
        stored = (*shape[:-4], shape[-1], *shape[-4:-1])  # (K, 3, T, S, S)
        if self.clips is None:
            self.clips = torch.empty((self.slots, *stored), dtype=torch.uint8).share_memory_()
            self.busy = torch.zeros(self.slots, dtype=torch.uint8).share_memory_()
        if tuple(self.clips.shape[1:]) != stored:
            return None
        busy = self.busy.numpy()
        free = np.flatnonzero(busy == 0)
        if not free.size:
            return None
        slot = int(free[0])
        busy[slot] = 1
        return self.clips[slot].movedim(-4, -1)

    def slot_of(self, clips: torch.Tensor) -> int | None:
        """The slot ``clips`` is, or None if it is not one of this ring's slots."""
        if self.clips is None or clips.untyped_storage().data_ptr() != self.clips.untyped_storage().data_ptr():
            return None
        return (clips.data_ptr() - self.clips.data_ptr()) // self.clips[0].nbytes

    def release(self, clips: torch.Tensor) -> None:
        slot = self.slot_of(clips)
        if slot is not None:
            self.busy.numpy()[slot] = 0


@dataclasses.dataclass
class _RingSlot:
    """Stands for a sample's clips on the way from a worker: slot ``index`` of worker ``worker``'s ring;
    the ring's tensors travel with the worker's first such sample only."""

    worker: int
    index: int
    ring: tuple[torch.Tensor, torch.Tensor] | None


class _SlotLease:
    """``SampleResult.release`` of a result whose clips are a ring slot: frees the slot, once."""

    def __init__(self, stream: ReferenceStream, busy: np.ndarray, index: int):
        self.stream, self.busy, self.index = stream, busy, index

    def __call__(self) -> None:
        if self.busy is not None:
            self.busy[self.index] = 0
            self.stream.slots_in_use -= 1
            self.busy = None


def _release(result) -> None:
    if isinstance(result, SampleResult) and result.release is not None:
        result.release()


class _WorkerDataset(Dataset):
    """Loads work items in a worker process. An item names everything it needs (reading id, index, record,
    repeat, epoch), so the same long-lived workers serve every epoch and prefetch the next one. The
    DataLoader's unit is a message of up to ``ITEMS_PER_MESSAGE`` consecutive items (see ``_ItemSampler``)."""

    def __init__(self, cfg: LoaderConfig, *, ring_slots: int = 0):
        self.cfg, self.ring_slots = cfg, ring_slots
        self._ring: OutputRing | None = None  # this worker's, made in the worker

    def __getitem__(self, items: list[tuple]) -> list[tuple]:
        return [self.load(item) for item in items]

    def load(self, item: tuple) -> tuple:
        """(reading, index, result) of one work item."""
        reading, index, record, repeat, epoch = item
        worker = get_worker_info()
        if worker is None or not self.ring_slots:
            return reading, index, load_sample(record, repeat, self.cfg, epoch)
        if self._ring is None:
            self._ring = OutputRing(self.ring_slots)
        result = load_sample(record, repeat, self.cfg, epoch, ring=self._ring)
        if isinstance(result, SampleResult):
            slot = self._ring.slot_of(result.clips)
            if slot is not None:
                ring = None if self._ring.announced else (self._ring.clips, self._ring.busy)
                self._ring.announced = True
                result.clips = _RingSlot(worker.id, slot, ring)
        return reading, index, result


ITEMS_PER_MESSAGE = 4
"""Work items a worker loads and returns together. Each DataLoader message costs the training process
about 0.5 ms of CPU however small it is (queues, pickling, thread wake-ups; measured with a dummy dataset,
2 workers, this project's 2-core machine), and that process's work per sample is what caps how far workers
scale; four items per message cut it to about a third (0.17 ms per sample)."""
PREFETCH = 2
"""Messages each worker is asked for ahead (the DataLoader's ``prefetch_factor``): with
``ITEMS_PER_MESSAGE``, 8 samples per worker."""
RING_SLOTS = ITEMS_PER_MESSAGE * (PREFETCH + 1) + 1
"""Slots of a worker's ``OutputRing``: the samples it has on their way (``PREFETCH`` messages), those of one
message received by the training process and not yet in a batch, and one spare."""


def _single_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # parallelism comes from the worker processes


def _worker_context():
    """Workers are forked from a clean server process that has imported this module (torch, PyAV, torchcodec)
    once: a plain fork of the training process can deadlock when a lock of one of its threads (DALI, OpenMP,
    libav) is held at that moment, and a spawn would re-import everything for every worker."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class _EpochPass:
    """One pass over a rank's epoch: its work items (see ``plan.record_and_repeat``) in order."""

    def __init__(self, ident: int, samples: list[SampleRecord], epoch: int, count: int, eval_mode: bool):
        self.ident, self.samples, self.epoch, self.count, self.eval_mode = ident, samples, epoch, count, eval_mode
        self.limit = len(samples) if eval_mode else (count if samples else 0)
        """Items to hand out: eval reads every sample once; pretrain/finetune ``count`` items plus one more per
        bad result (the same items ``plan.epoch_results`` runs)."""
        self.sent = 0

    def matches(self, samples: list[SampleRecord], epoch: int, count: int) -> bool:
        return (self.epoch, self.count, [(r.shard, r.key) for r in self.samples]) == (epoch, count, [(r.shard, r.key) for r in samples])


class _ItemSampler:
    """The DataLoader's sampler: the next unsent items (up to ``ITEMS_PER_MESSAGE``, one message) of the first
    reading that has some (the current epoch first, then the one expected next). Ends when none has, and is
    restarted when one has again."""

    def __init__(self):
        self.passes: list[_EpochPass] = []

    def __iter__(self):
        while True:
            reading = next((r for r in self.passes if r.sent < r.limit), None)
            if reading is None:
                return
            indices = range(reading.sent, min(reading.sent + ITEMS_PER_MESSAGE, reading.limit))
            reading.sent = indices.stop
            yield [(reading.ident, i, *record_and_repeat(reading.samples, i), reading.epoch) for i in indices]


class ReferenceStream:
    """Per-sample results of a rank's epochs from worker processes that live as long as the stream.

    While an epoch's last items are being decoded, the workers go on with the first items of the epoch
    the caller says comes next (``upcoming``), so a new epoch starts with its first batches ready. Results
    are the same as a fresh pool's: every item is determined by (record, repeat, epoch), and each epoch's
    results come in item order; results of a reading nobody asks for are dropped."""

    def __init__(self, cfg: LoaderConfig, *, num_workers: int):
        self.cfg, self.num_workers = cfg, num_workers
        self._item_sampler = _ItemSampler()
        self._loader = self._batches = None
        self._buffered: dict[int, collections.deque] = {}  # reading id -> results received ahead of time
        self._rings: dict[int, tuple[torch.Tensor, object]] = {}  # worker id -> its OutputRing's (clips, busy flags)
        self._next_ident = 0
        self.slots_in_use = 0  # ring slots of results received here and not yet released

    def decoded_frames_per_clip(self) -> None:
        return None  # PyAV's seeking is not counted

    def results(self, samples: list[SampleRecord], *, epoch: int, count: int, upcoming: tuple | None = None):
        """Per-sample results in reading order (the items of ``plan.epoch_results``). ``upcoming``: (samples, epoch,
        count) of the pass expected after this one, prefetched once this one's items are all handed out."""
        if self.num_workers == 0:
            dataset = _WorkerDataset(self.cfg)
            return epoch_results(samples, self.cfg, count, lambda indices: (dataset.load((0, i, *record_and_repeat(samples, i), epoch))[2] for i in indices))
        return self._results(samples, epoch, count, upcoming)

    def _new_pass(self, samples, epoch: int, count: int) -> _EpochPass:
        self._next_ident += 1
        return _EpochPass(self._next_ident, samples, epoch, count, self.cfg.mode == "eval")

    def _results(self, samples, epoch: int, count: int, upcoming):
        ahead = [r for r in self._item_sampler.passes[1:] if r.matches(samples, epoch, count)]
        current = ahead[0] if ahead else self._new_pass(samples, epoch, count)
        passes = [current] + ([self._new_pass(*upcoming)] if upcoming is not None else [])
        self._item_sampler.passes = passes  # others are dropped; their results are discarded on arrival
        kept = {r.ident for r in passes}
        for ident, dropped in self._buffered.items():  # e.g. the rest of a pass its caller stopped early
            if ident not in kept:
                for result in dropped:
                    _release(result)
        self._buffered = {r.ident: self._buffered.get(r.ident, collections.deque()) for r in passes}
        wanted = len(samples) if current.eval_mode else count
        done = good = 0
        while (done if current.eval_mode else good) < wanted and samples:
            result = self._next_result(current)
            done += 1
            if isinstance(result, BadSampleError):
                if not current.eval_mode:
                    current.limit += 1  # replaced by the next re-draw
            else:
                good += 1
            yield result

    def _next_result(self, current: _EpochPass):
        buffered = self._buffered[current.ident]
        while not buffered:
            for ident, _index, result in self._receive():
                result = self._from_ring(result)
                if ident in self._buffered:
                    self._buffered[ident].append(result)
                else:  # nobody asks for it
                    _release(result)
        return buffered.popleft()

    def _from_ring(self, result):
        """``result`` with its clips as a (K, T, S, S, 3) view of its worker's ring slot, which stays busy until
        ``result.release()``: the loader normalizes the clips straight out of the slot into its batch and then
        frees it (one pass over the sample here, where copying it out first cost another 0.35 ms per pretext
        sample, and this process's work per sample is what caps how far workers scale)."""
        if isinstance(result, SampleResult) and isinstance(result.clips, _RingSlot):
            slot = result.clips
            if slot.ring is not None:
                self._rings[slot.worker] = (slot.ring[0], slot.ring[1].numpy())
            clips, busy = self._rings[slot.worker]
            result.clips = clips[slot.index].movedim(-4, -1)
            result.release = _SlotLease(self, busy, slot.index)
            self.slots_in_use += 1
        return result

    def _receive(self):
        if self._loader is None:
            # batch_size=None: workers return samples one by one (a few per message), so bad ones can be dropped
            # and batches kept full. Ring size: the DataLoader hands messages to workers in turn and sends a new
            # one when the oldest has been returned, so a worker holds at most PREFETCH messages that are not yet
            # back (the one it writes included), and this process holds at most one returned message's samples
            # that are not yet in a batch (they come in order: it receives when it has none left)
            items = _WorkerDataset(self.cfg, ring_slots=RING_SLOTS)
            self._loader = DataLoader(items, batch_size=None, sampler=self._item_sampler, num_workers=self.num_workers,
                                      worker_init_fn=_single_thread, prefetch_factor=PREFETCH, persistent_workers=True,
                                      multiprocessing_context=_worker_context())
        for _ in range(2):
            if self._batches is None:
                self._batches = iter(self._loader)  # the same workers: persistent_workers
            try:
                return next(self._batches)
            except StopIteration:  # every item handed out was returned; new ones may have come since
                self._batches = None
        raise RuntimeError("reference loader: no work item left to read (internal error)")

    def close(self) -> None:
        """Stop the worker processes (also done when the stream is garbage-collected)."""
        if self._batches is not None and hasattr(self._batches, "_shutdown_workers"):
            self._batches._shutdown_workers()
        self._loader = self._batches = None
