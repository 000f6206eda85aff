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
    """Work item ``i`` of a rank's epoch (see ``plan.work_item``), loaded in a worker process."""

    def __init__(self, samples: list[SampleRecord], cfg: LoaderConfig, epoch: int):
        self.samples, self.cfg, self.epoch = samples, cfg, epoch

    def __getitem__(self, i: int):
        record, repeat = work_item(self.samples, i)
        return load_sample(record, repeat, self.cfg, self.epoch)


def _single_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # parallelism comes from the worker processes


def _worker_context():
    """Workers are forked from a clean server process that has imported this module (torch, PyAV, torchcodec)
    once: a plain fork of the training process can deadlock when a lock of one of its threads (DALI, OpenMP,
    libav) is held at that moment, and a spawn would re-import everything for every worker."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class ReferenceStream:
    def __init__(self, cfg: LoaderConfig, *, num_workers: int):
        self.cfg, self.num_workers = cfg, num_workers

    def results(self, samples: list[SampleRecord], *, epoch: int, count: int):
        """Per-sample results in reading order (see ``plan.drive``)."""
        dataset = _Items(samples, self.cfg, epoch)

        def run(indices: range):
            if self.num_workers == 0:
                yield from (dataset[i] for i in indices)
                return
            # batch_size=None: workers return single samples, so bad ones can be dropped and batches kept full
            loader = DataLoader(dataset, batch_size=None, sampler=indices, num_workers=self.num_workers,
                                worker_init_fn=_single_thread, prefetch_factor=4, multiprocessing_context=_worker_context())
            yield from loader

        return drive(samples, self.cfg, count, run)
