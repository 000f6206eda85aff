"""DALI backend: the sampler's frame lists and the samples' encoded bytes go in through ``external_source``,
``fn.decoders.video`` decodes each video once for all its clips (the sorted unique union of their frames),
and the shared torch code cuts the clips out (on the GPU when the decoder is ``mixed``).

Why not ``fn.readers.webdataset``: the sampler needs every sample's frame count and key before its frames
can be chosen, and the reader's shuffled order is internal to DALI. Reading the members ourselves (byte
ranges from the index files, see ``shards.py``) keeps one sampler, one epoch plan and one rank partition for
both backends, and lets an error name the shard and key. Reading costs microseconds per sample; decoding
costs milliseconds.

DALI rejects bad bytes by throwing, which leaves the pipeline unusable. When that happens the pipeline is
rebuilt and the samples that were in flight are decoded one by one, so the culprit is named (or skipped).

Decode work is bounded: DALI's decoders do not seek, so each sample's stream is first cut to the packets
its clips need (``dali/stream_cut.py``) and DALI decodes that from its start. The cut runs off the training
process for local shards (``cut_workers`` processes; reading and remuxing a 300-frame sample is 1.6-2.6 ms of
Python that would otherwise hold the GIL the training thread needs); URL shards are read and cut by a
thread per sample, where the wait for the network dominates. ``pad_mode="none"`` makes a frame index past the
end an error instead of a black frame, and each cut stream carries a witness (``stream_cut.py``): a frame
DALI reports as decoded but never wrote makes the sample an error instead of a clip. On a GPU,
``num_threads`` is the ``mixed`` decoder's thread pool (videos decoded at once, sized for NVDEC, not the
CPU), threads are not pinned to cores (``affine=False``: under DDP every rank's pool would pin to the same
first cores), outputs are taken on the consumer's CUDA stream and wrapped with DLPack (no device copy), and a
batch's clips are cut in a few kernels for all its samples at once (``views.assemble_batch``).

One pipeline serves every epoch of the loader (DALI's own threads with it). It runs on DALI's dynamic
executor, whose outputs stay valid for as long as they are referenced and are freed in the order of the
CUDA stream they were bound to: the clips are cut from them on that stream, so no host sync is needed
before the next batch's outputs are taken.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import multiprocessing

import numpy as np
import torch

from pipeline.config import LoaderConfig
from pipeline.views import assemble_batch
from pipeline.plan import check_decoded, epoch_results, plan_sample, sample_result, record_and_repeat
from pipeline.io.shard_reader import BadSampleError, SampleRecord
from pipeline.dali.stream_cut import cut_sample

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # batches scheduled ahead, so DALI decodes the next batch while torch cuts the current one


def decoder_options(*, mixed: bool) -> dict:
    """Keyword arguments of ``fn.decoders.video`` (checked against DALI 2.4's docstring)."""
    # pad_mode="none": a frame past the end raises (the default, "constant", returns black frames silently)
    options = {"device": "mixed" if mixed else "cpu", "pad_mode": "none"}
    if mixed:
        options["affine"] = False  # the mixed backend pins its pool threads to cores by default
    return options


def build_decode_pipeline(*, batch_size: int, num_threads: int, device_id: int | None):
    """``encoded`` bytes + ``frame_indices`` (int32 list per sample) -> (F, H, W, 3) uint8 frames per sample."""
    from nvidia.dali import fn, pipeline_def, types

    options = decoder_options(mixed=device_id is not None)

    # set_affinity=False: no pinning of DALI's own threads either (under DDP every rank would pick the same cores).
    # exec_dynamic=True (DALI's default here, named because the stream relies on it): outputs are not
    # overwritten by later iterations while referenced, so no host sync guards DALI's buffers.
    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, prefetch_queue_depth=1, set_affinity=False,
                  exec_dynamic=True)
    def decode():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        frame_indices = fn.external_source(name="frame_indices", dtype=types.INT32, ndim=1)
        return fn.decoders.video(encoded, frames=frame_indices, **options)

    pipe = decode()
    pipe.build()
    return pipe


def _to_torch(tensor, device_id: int | None) -> torch.Tensor:
    """One DALI output sample as a torch tensor. CPU: a copy. GPU: a DLPack view of DALI's buffer, which the
    dynamic executor keeps while the view lives and frees in the order of the stream the outputs are bound to
    (the loader thread's, where :meth:`DaliStream._merge` cuts the clips)."""
    if device_id is None:
        return torch.from_numpy(np.array(tensor))  # copies
    return torch.from_dlpack(tensor)  # GPU path (cannot run on CPU-only CI; docker/gpu_check.sh covers it)


class DaliStream:
    """Per-sample results of DALI's video decoder (see the module docstring).

    ``decoded_frames`` / ``clips``: frames DALI was asked to decode for the clips (from the start of each cut
    stream it was fed to the last wanted frame) and clips returned, so far; ``witness_frames``: the extra
    frames decoded for the witnesses (one per sample that has one)."""

    def __init__(self, cfg: LoaderConfig, *, device_id: int | None, num_threads: int, cut_workers: int = 0):
        self.cfg, self.device_id, self.num_threads, self.cut_workers = cfg, device_id, num_threads, cut_workers
        self._pipe = None  # built when a batch is first fed (_schedule), kept across epochs; dropped after a failure
        self._readers = None  # threads fetching and cutting a batch's URL samples at once (made on first use)
        self._cutters = None  # processes cutting local samples' streams (made on first use)
        self.decoded_frames = self.clips = self.witness_frames = 0
        log.info("DALI video decoder on %s, %d threads; streams cut by %s", "the CPU" if device_id is None else f"GPU {device_id} (mixed)",
                 num_threads, f"{cut_workers} processes" if cut_workers else "the loader thread")

    def _plan(self, record: SampleRecord, repeat: int, epoch: int):
        plan = plan_sample(record, self.cfg, epoch, repeat)
        assert plan.union[0] >= 0 and plan.union[-1] < record.video_frames, (record.key, plan.union)
        return plan

    def _prepare_batch(self, samples: list[SampleRecord], batch: list[int], epoch: int) -> list:
        """(plan, cut stream) per work item, or its BadSampleError, in order."""
        items = [record_and_repeat(samples, i) for i in batch]
        plans = [self._plan(record, repeat, epoch) for record, repeat in items]
        if any(record.remote is not None for record, _ in items):
            # URL shards: one request per sample, all of a batch in flight together, so a batch costs about one
            # round trip instead of batch_size of them (order kept: map returns results in input order)
            if self._readers is None:
                self._readers = concurrent.futures.ThreadPoolExecutor(self.cfg.batch_size, thread_name_prefix="shard-read")
            cuts = list(self._readers.map(lambda plan: cut_sample(plan.record, plan.union), plans))
        elif self.cut_workers:
            cuts = list(self._cut_pool().map(cut_sample, [p.record for p in plans], [p.union for p in plans]))
        else:
            cuts = [cut_sample(plan.record, plan.union) for plan in plans]
        return [cut if isinstance(cut, BadSampleError) else (plan, cut) for plan, cut in zip(plans, cuts)]

    def _cut_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        """Processes forked from a clean server that has imported the cutting code (not from the training
        process: a fork there could copy a lock held by one of its threads: DALI's, torch's, libav's)."""
        if self._cutters is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["pipeline.dali.stream_cut"])
            self._cutters = concurrent.futures.ProcessPoolExecutor(self.cut_workers, mp_context=context)
        return self._cutters

    def _schedule(self, entries) -> bool:
        """Feed the good entries to the pipeline and start decoding them; False when there is none. The one place
        that builds the pipeline: on first use, and after a failure dropped it (``self._pipe = None``)."""
        todo = [e for e in entries if not isinstance(e, BadSampleError)]
        if not todo:
            return False
        if self._pipe is None:
            self._pipe = build_decode_pipeline(batch_size=self.cfg.batch_size, num_threads=self.num_threads, device_id=self.device_id)
        self._pipe.feed_input("encoded", [stream.data for _, stream in todo])
        self._pipe.feed_input("frame_indices", [stream.frames_to_request for _, stream in todo])
        self._pipe.schedule_run()
        return True

    def _outputs(self):
        """The next batch's outputs; on a GPU bound to the current (the loader thread's) CUDA stream."""
        if self.device_id is None:
            return self._pipe.outputs()
        return self._pipe.outputs(cuda_stream=torch.cuda.current_stream(self.device_id))

    def _merge(self, entries, outputs) -> list:
        """Results of a scheduled batch: shape checks and witnesses per sample, then the clips of all good
        samples cut in one call (``views.assemble_batch``: a few kernels per batch on a GPU)."""
        (frames,) = outputs
        results, decoded, j = [], [], 0
        for entry in entries:
            if isinstance(entry, BadSampleError):
                results.append(entry)
                continue
            plan, stream = entry
            frames_j = _to_torch(frames[j], self.device_id)
            j += 1
            try:
                if len(frames_j) != len(stream.frames_to_request):
                    raise BadSampleError(plan.record.shard, plan.record.key, f"decoder returned {len(frames_j)} frames, "
                                         f"{len(stream.frames_to_request)} were asked for")
                check_decoded(plan, frames_j[: len(plan.union)])
            except BadSampleError as e:
                results.append(e)
                continue
            results.append(None)  # filled below
            decoded.append((len(results) - 1, plan, stream, frames_j))
        unwritten = _witness_failures([(stream, f) for _, _, stream, f in decoded])
        good = []
        for (slot, plan, stream, frames_j), failed in zip(decoded, unwritten):
            if failed:
                results[slot] = BadSampleError(plan.record.shard, plan.record.key, "DALI returned frames it did not decode: the stream's "
                                               "first frame and its witness copy at the end differ (stream_cut.py)")
                continue
            good.append((slot, plan, frames_j[: len(plan.union)]))
            self.decoded_frames += stream.decoded
            self.witness_frames += stream.witness is not None
            self.clips += len(plan.views)
        clips = assemble_batch([d for _, _, d in good], [p.positions for _, p, _ in good], [p.views for _, p, _ in good])
        for (slot, plan, _), sample_clips in zip(good, clips):
            results[slot] = sample_result(plan, sample_clips)
        return results

    def _one_by_one(self, entries, failure: Exception) -> list:
        """After a pipeline failure: decode each sample alone on a fresh pipeline to find the culprit(s)."""
        results = []
        for entry in entries:
            if isinstance(entry, BadSampleError):
                results.append(entry)
                continue
            plan, _ = entry
            try:
                self._schedule([entry])
                results.extend(self._merge([entry], self._outputs()))
            except Exception as e:  # noqa: BLE001 -- DALI raises RuntimeError/IndexError; either way this sample broke it
                message = str(e).strip().splitlines()
                reason = next((line for line in message if "Failed" in line or "rror" in line), message[0] if message else type(e).__name__)
                results.append(BadSampleError(plan.record.shard, plan.record.key, f"DALI video decoder failed: {reason[:300]}"))
                self._pipe = None  # rebuilt by the next _schedule
        if not any(isinstance(r, BadSampleError) for r in results):
            log.warning("DALI failed on a batch but on none of its samples alone: %s", failure)
        return results

    def decoded_frames_per_clip(self) -> float | None:
        return self.decoded_frames / self.clips if self.clips else None

    def close(self) -> None:
        """Let go of the pipeline (DALI's own threads end with it), the reader threads and the cutting processes."""
        self._pipe = None
        for pool in (self._readers, self._cutters):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._readers = self._cutters = None

    def results(self, samples: list[SampleRecord], *, epoch: int, count: int, upcoming=None):
        """Per-sample results in reading order (see ``plan.epoch_results``); ``upcoming`` is not used (the pipeline
        decodes a batch ahead within a pass only)."""
        return epoch_results(samples, self.cfg, count, lambda indices: self._run(samples, indices, epoch))

    def _run(self, samples: list[SampleRecord], indices: range, epoch: int):
        indices = iter(indices)
        in_flight: collections.deque = collections.deque()  # (entries, scheduled)
        exhausted = False
        try:
            while True:
                while len(in_flight) < IN_FLIGHT and not exhausted:
                    batch = list(itertools.islice(indices, self.cfg.batch_size))
                    if not batch:
                        exhausted = True
                        break
                    entries = self._prepare_batch(samples, batch, epoch)
                    in_flight.append((entries, self._schedule(entries)))
                if not in_flight:
                    return
                entries, scheduled = in_flight.popleft()
                if not scheduled:
                    yield from entries
                    continue
                try:
                    outputs = self._outputs()
                except Exception as failure:  # noqa: BLE001 -- the pipeline is now invalid; find who broke it
                    lost = [entry for batch in [entries, *(e for e, _ in in_flight)] for entry in batch]
                    in_flight.clear()
                    self._pipe = None
                    yield from self._one_by_one(lost, failure)  # together: the warning below means no lost sample failed alone
                    continue
                yield from self._merge(entries, outputs)
        finally:
            self._drain(in_flight)

    def _drain(self, in_flight) -> None:
        """Take the outputs of batches scheduled but not consumed (the caller stopped early), so the kept pipeline
        starts the next pass empty; a pipeline that fails here is dropped and rebuilt on next use."""
        for _, scheduled in in_flight:
            if scheduled and self._pipe is not None:
                try:
                    self._outputs()
                except Exception:  # noqa: BLE001 -- nobody wants these results; only the pipeline's state matters
                    self._pipe = None


def _witness_failures(decoded: list) -> list[bool]:
    """For each (cut stream, decoded frames) pair: True when its two witness frames differ (see ``stream_cut.py``).
    One comparison per pair (a batch's videos may differ in size) and one copy of all the answers to the host
    for the whole batch (on a GPU: one sync of the loader thread, not one per sample)."""
    pairs = [(i, f[s.witness[0]], f[s.witness[1]]) for i, (s, f) in enumerate(decoded) if s.witness is not None]
    failed = [False] * len(decoded)
    if pairs:  # per pair (a batch's videos may differ in size), then one copy of the answers
        differs = torch.stack([(a != b).any() for _, a, b in pairs]).tolist()
        for (i, _, _), bad in zip(pairs, differs):
            failed[i] = bad
    return failed
