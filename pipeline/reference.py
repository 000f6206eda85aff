"""Reference backend: ``torch.utils.data.DataLoader`` worker processes, each reading a sample's bytes from its
shard, drawing its clips with the shared sampler and decoding the union of their frames in one pass
(``decode.pyav_union_decode``: single-threaded libavcodec that jumps to a keyframe only when that saves
decoding; torchcodec when frames are reordered). The CPU default, the correctness oracle for DALI, and a
benchmark baseline.

When the stored frames already have the size the views crop from (shards built at ``--short-side`` equal
to the loader's ``resize``, the usual case), each decoded frame's crops are copied as they come into the
sample's output tensor, which a worker allocates in shared memory so that handing it to the training
process copies nothing: for yuv420p frames the crops are cut in YUV and only they are converted to RGB,
one call per clip (``yuv_clips.YuvClipWriter``), other formats are converted whole and cut
(``augment.ClipWriter``). Otherwise the frames are stacked, resized once and cut
(``augment.assemble_clips``), exactly as the DALI backend does."""

from __future__ import annotations

import collections
import functools
import multiprocessing

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from pipeline.augment import ClipWriter, clip_buffer, needs_resize
from pipeline.config import LoaderConfig
from pipeline.decode import pyav_union_decode, pyav_union_frames, rgb_view, torchcodec_decoder
from pipeline.plan import SamplePlan, drive, finish_sample, plan_sample, sample_result, work_item
from pipeline.shards import BadSampleError, SampleRecord, check_stream
from pipeline.yuv_clips import YuvClipWriter


def load_sample(record: SampleRecord, repeat: int, cfg: LoaderConfig, epoch: int):
    """One sample end to end on the CPU; a problem with the sample comes back as its BadSampleError."""
    try:
        plan = plan_sample(record, cfg, epoch, repeat)
        check = functools.partial(check_stream, record)
        video = record.open_video()  # read on demand: only the packets the clips need are read
        try:
            try:
                if not needs_resize(plan.views, record.meta["height"], record.meta["width"]):
                    return sample_result(plan, _write_clips(plan, video, check))
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
        return finish_sample(plan, decoded)
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


def _write_clips(plan: SamplePlan, video, check) -> torch.Tensor:
    """Decode ``plan.union`` and cut each frame's crops into the clips as it comes: uint8 (K, T, S, S, 3).
    yuv420p frames go through ``YuvClipWriter`` (only the crops are converted to RGB), others through
    ``ClipWriter``. ``video``: encoded bytes or a file (see ``pyav_union_decode``, whose ValueError for
    reordered frames or irregular timestamps passes through)."""
    out = clip_buffer(plan.positions, plan.views[0].size)
    if get_worker_info() is not None:  # in a worker: the DataLoader then passes the tensor by handle, not by copy
        out.share_memory_()
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


class _Items(Dataset):
    """Loads work items in a worker process. An item names everything it needs (reading id, index, record,
    repeat, epoch), so the same long-lived workers serve every epoch and prefetch the next one."""

    def __init__(self, cfg: LoaderConfig):
        self.cfg = cfg

    def __getitem__(self, item):
        reading, index, record, repeat, epoch = item
        return reading, index, load_sample(record, repeat, self.cfg, epoch)


def _single_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # parallelism comes from the worker processes


def _worker_context():
    """Workers are forked from a clean server process that has imported this module (torch, PyAV, torchcodec)
    once: a plain fork of the training process can deadlock when a lock of one of its threads (DALI, OpenMP,
    libav) is held at that moment, and a spawn would re-import everything for every worker."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class _Reading:
    """One pass over a rank's epoch: its work items (see ``plan.work_item``) in order."""

    def __init__(self, ident: int, samples: list[SampleRecord], epoch: int, count: int, eval_mode: bool):
        self.ident, self.samples, self.epoch, self.count, self.eval_mode = ident, samples, epoch, count, eval_mode
        self.limit = len(samples) if eval_mode else (count if samples else 0)
        """Items to hand out: eval reads every sample once; pretext/train ``count`` items plus one more per
        bad result (the same items ``plan.drive`` runs)."""
        self.sent = 0

    def matches(self, samples: list[SampleRecord], epoch: int, count: int) -> bool:
        return (self.epoch, self.count, [(r.shard, r.key) for r in self.samples]) == (epoch, count, [(r.shard, r.key) for r in samples])


class _Dispatch:
    """The DataLoader's sampler: the next unsent item of the first reading that has one (the current epoch
    first, then the one expected next). Ends when none has, and is restarted when one has again."""

    def __init__(self):
        self.readings: list[_Reading] = []

    def __iter__(self):
        while True:
            reading = next((r for r in self.readings if r.sent < r.limit), None)
            if reading is None:
                return
            index = reading.sent
            reading.sent += 1
            record, repeat = work_item(reading.samples, index)
            yield reading.ident, index, record, repeat, reading.epoch


class ReferenceStream:
    """Per-sample results of a rank's epochs from worker processes that live as long as the stream.

    While an epoch's last items are being decoded, the workers go on with the first items of the epoch
    the caller says comes next (``upcoming``), so a new epoch starts with its first batches ready. Results
    are the same as a fresh pool's: every item is determined by (record, repeat, epoch), and each epoch's
    results come in item order; results of a reading nobody asks for are dropped."""

    persistent = True  # VideoLoader passes ``upcoming``

    def __init__(self, cfg: LoaderConfig, *, num_workers: int):
        self.cfg, self.num_workers = cfg, num_workers
        self._dispatch = _Dispatch()
        self._loader = self._batches = None
        self._buffered: dict[int, collections.deque] = {}  # reading id -> results received ahead of time
        self._next_ident = 0

    def results(self, samples: list[SampleRecord], *, epoch: int, count: int, upcoming: tuple | None = None):
        """Per-sample results in reading order (the items of ``plan.drive``). ``upcoming``: (samples, epoch,
        count) of the pass expected after this one, prefetched once this one's items are all handed out."""
        if self.num_workers == 0:
            dataset = _Items(self.cfg)
            return drive(samples, self.cfg, count, lambda indices: (dataset[(0, i, *work_item(samples, i), epoch)][2] for i in indices))
        return self._results(samples, epoch, count, upcoming)

    def _reading(self, samples, epoch: int, count: int) -> _Reading:
        self._next_ident += 1
        return _Reading(self._next_ident, samples, epoch, count, self.cfg.mode == "eval")

    def _results(self, samples, epoch: int, count: int, upcoming):
        ahead = [r for r in self._dispatch.readings[1:] if r.matches(samples, epoch, count)]
        current = ahead[0] if ahead else self._reading(samples, epoch, count)
        readings = [current] + ([self._reading(*upcoming)] if upcoming is not None else [])
        self._dispatch.readings = readings  # others are dropped; their results are discarded on arrival
        self._buffered = {r.ident: self._buffered.get(r.ident, collections.deque()) for r in readings}
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

    def _next_result(self, current: _Reading):
        buffered = self._buffered[current.ident]
        while not buffered:
            ident, _index, result = self._receive()
            if ident in self._buffered:
                self._buffered[ident].append(result)
        return buffered.popleft()

    def _receive(self):
        if self._loader is None:
            # batch_size=None: workers return single samples, so bad ones can be dropped and batches kept full
            self._loader = DataLoader(_Items(self.cfg), batch_size=None, sampler=self._dispatch, num_workers=self.num_workers,
                                      worker_init_fn=_single_thread, prefetch_factor=4, persistent_workers=True,
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
