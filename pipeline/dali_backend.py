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
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging

import numpy as np
import torch

from pipeline.config import LoaderConfig
from pipeline.plan import SamplePlan, drive, finish_sample, plan_sample, work_item
from pipeline.shards import BadSampleError, SampleRecord, check_video_bytes

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # batches scheduled ahead, so DALI decodes the next batch while torch cuts the current one


def build_decode_pipeline(*, batch_size: int, num_threads: int, device_id: int | None):
    """``encoded`` bytes + ``frames`` (int32 list per sample) -> (F, H, W, 3) uint8 frames per sample."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, prefetch_queue_depth=1)
    def decode():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
        return fn.decoders.video(encoded, frames=frames, device="cpu" if device_id is None else "mixed")

    pipe = decode()
    pipe.build()
    return pipe


def _to_torch(tensor, device_id: int | None) -> torch.Tensor:
    """One DALI output sample as a torch tensor that owns its memory (DALI reuses its buffers)."""
    if device_id is None:
        return torch.from_numpy(np.array(tensor))  # copies
    # GPU path: copy into a torch CUDA tensor on the current stream (cannot be tested on CPU-only CI)
    from nvidia.dali.plugin.pytorch import feed_ndarray

    out = torch.empty(tuple(tensor.shape()), dtype=torch.uint8, device=torch.device("cuda", device_id))
    feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(device_id))
    return out


class DaliStream:
    def __init__(self, cfg: LoaderConfig, *, device_id: int | None, num_threads: int):
        self.cfg, self.device_id, self.num_threads = cfg, device_id, num_threads
        self._pipe = None
        self._readers = None  # threads fetching a batch's members from URL shards at once (made on first use)
        log.info("DALI video decoder on %s", "the CPU" if device_id is None else f"GPU {device_id} (mixed)")

    def _fresh_pipe(self):
        self._pipe = build_decode_pipeline(batch_size=self.cfg.batch_size, num_threads=self.num_threads, device_id=self.device_id)
        return self._pipe

    def _prepare(self, record: SampleRecord, repeat: int, epoch: int):
        """(plan, encoded bytes) ready to feed, or the sample's BadSampleError."""
        try:
            plan = plan_sample(record, self.cfg, epoch, repeat)
            assert plan.union[0] >= 0 and plan.union[-1] < record.frames, (record.key, plan.union)
            data = record.read_video()
            check_video_bytes(record, data)
            return plan, np.frombuffer(data, dtype=np.uint8)
        except BadSampleError as e:
            return e
        except OSError as e:
            return BadSampleError(record.shard, record.key, f"read failed: {e}")

    def _prepare_batch(self, samples: list[SampleRecord], batch: list[int], epoch: int) -> list:
        items = [work_item(samples, i) for i in batch]
        if not any(record.remote is not None for record, _ in items):
            return [self._prepare(record, repeat, epoch) for record, repeat in items]
        # URL shards: one request per sample, all of a batch in flight together, so a batch costs about one
        # round trip instead of batch_size of them (order kept: map returns results in input order)
        if self._readers is None:
            self._readers = concurrent.futures.ThreadPoolExecutor(self.cfg.batch_size, thread_name_prefix="shard-read")
        return list(self._readers.map(lambda item: self._prepare(item[0], item[1], epoch), items))

    def _schedule(self, entries) -> bool:
        todo = [e for e in entries if not isinstance(e, BadSampleError)]
        if not todo:
            return False
        self._pipe.feed_input("encoded", [data for _, data in todo])
        self._pipe.feed_input("frames", [plan.union.astype(np.int32) for plan, _ in todo])
        self._pipe.schedule_run()
        return True

    def _finish(self, plan: SamplePlan, decoded: torch.Tensor):
        try:
            return finish_sample(plan, decoded)
        except BadSampleError as e:
            return e

    def _merge(self, entries, outputs) -> list:
        (frames,) = outputs
        results, j = [], 0
        for entry in entries:
            if isinstance(entry, BadSampleError):
                results.append(entry)
            else:
                results.append(self._finish(entry[0], _to_torch(frames[j], self.device_id)))
                j += 1
        return results

    def _one_by_one(self, entries, failure: Exception) -> list:
        """After a pipeline failure: decode each sample alone on a fresh pipeline to find the culprit(s)."""
        results = []
        for entry in entries:
            if isinstance(entry, BadSampleError):
                results.append(entry)
                continue
            plan, _ = entry
            pipe = self._pipe if self._pipe is not None else self._fresh_pipe()
            try:
                self._schedule([entry])
                results.append(self._merge([entry], pipe.outputs()))
            except Exception as e:  # noqa: BLE001 -- DALI raises RuntimeError/IndexError; either way this sample broke it
                message = str(e).strip().splitlines()
                reason = next((line for line in message if "Failed" in line or "rror" in line), message[0] if message else type(e).__name__)
                results.append(BadSampleError(plan.record.shard, plan.record.key, f"DALI video decoder failed: {reason[:300]}"))
                self._pipe = None
        if self._pipe is None:
            self._fresh_pipe()
        flat = []
        for r in results:
            flat.extend(r if isinstance(r, list) else [r])
        if not any(isinstance(r, BadSampleError) for r in flat):
            log.warning("DALI failed on a batch but on none of its samples alone: %s", failure)
        return flat

    def results(self, samples: list[SampleRecord], *, epoch: int, count: int):
        """Per-sample results in reading order (see ``plan.drive``)."""
        self._fresh_pipe()
        return drive(samples, self.cfg, count, lambda indices: self._run(samples, indices, epoch))

    def _run(self, samples: list[SampleRecord], indices: range, epoch: int):
        indices = iter(indices)
        in_flight: collections.deque = collections.deque()  # (entries, scheduled)
        exhausted = False
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
                outputs = self._pipe.outputs()
            except Exception as failure:  # noqa: BLE001 -- the pipeline is now invalid; find who broke it
                lost = [entries] + [e for e, _ in in_flight]
                in_flight.clear()
                self._pipe = None
                for batch in lost:
                    yield from self._one_by_one(batch, failure)
                continue
            yield from self._merge(entries, outputs)
