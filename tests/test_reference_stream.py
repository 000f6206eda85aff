"""``pipeline/reference/stream.py``: worker processes that live for the run and prefetch the next epoch, their
shared-memory output rings, and the direct-copy path (crops straight from each decoded frame) against the
stack-then-cut path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pipeline import LoaderConfig, build_loader
from pipeline_helpers import PIXEL_TOLERANCE, RAW, corrupt_sample, good_samples, run


def test_reference_workers_live_for_the_run_and_prefetch_the_next_epoch(shards, tmp_path):
    """One set of worker processes serves every epoch and starts on epoch e+1 while e ends; whatever the
    order of passes (whole, abandoned after one batch, repeated, skipping epochs), every batch equals the
    one the in-process loader draws, including a bad sample skipped and replaced."""
    import os
    import time

    from pipeline_helpers import write_tar

    good = good_samples(shards)
    bad_key, bad_sample = corrupt_sample("garbage", good, tmp_path)
    bad = [str(write_tar(tmp_path / "mixed-000000.tar", {**good, bad_key: bad_sample}))]
    cfg = LoaderConfig(**{**RAW, "skip_bad_samples": True})
    workers = build_loader(bad, cfg, backend="reference", num_workers=2, normalized=False)
    inline = build_loader(bad, cfg, backend="reference", num_workers=0, normalized=False)

    def passes(loader, epoch, stop=None):
        loader.set_epoch(epoch)
        return [(b["key"], b["frame_indices"], b["clips"]) for b in itertools.islice(loader, stop)]

    pids = None
    for epoch, stop in [(0, None), (1, None), (2, 1), (2, None), (5, None), (6, 1)]:
        got, expected = passes(workers, epoch, stop), passes(inline, epoch, stop)
        assert [k for k, _, _ in got] == [k for k, _, _ in expected]
        assert all(torch.equal(a, b) and torch.equal(c, d) for (_, a, c), (_, b, d) in zip(got, expected))
        stream = workers._stream
        now = sorted(w.pid for w in stream._batches._workers)
        assert pids is None or now == pids  # the same processes, epoch after epoch
        pids = now
        # no ring slot is held here but by results received and not yet asked for (a stopped pass's, or the
        # next epoch's that came before a replacement for a bad sample): the loader released every other one
        waiting = [r for results in stream._buffered.values() for r in results]
        assert stream.slots_in_use == sum(getattr(r, "release", None) is not None for r in waiting)
        if stop is None:  # a whole pass: the next epoch's first items were handed out before it was asked for
            upcoming = stream._item_sampler.passes[1]
            assert upcoming.epoch == epoch + 1 and upcoming.sent > 0
    assert workers.stats["skipped"] > 0 and workers.stats["skipped"] == inline.stats["skipped"]
    rings = workers._stream._rings  # both workers wrote into their shared-memory rings (mapped here once)
    assert sorted(rings) == [0, 1] and all(clips.is_shared() for clips, _ in rings.values())
    workers.close()
    for pid in pids:  # close() stops them
        with pytest.raises(ProcessLookupError):
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)


def test_a_worker_output_ring_hands_out_free_slots_only_and_gets_them_back(shards, tmp_path):
    """A worker's clips go into a free slot of its ring, which stays busy until the training process frees
    it; a full ring or another shape gives None (the worker then allocates); a sample that fails while
    being written gives its slot back."""
    from pipeline.views import clip_shape
    from pipeline.reference.stream import OutputRing, load_sample
    from pipeline.io.shard_reader import BadSampleError, scan_shards

    ring = OutputRing(2)
    a, b = ring.take((1, 2, 3, 3, 3)), ring.take((1, 2, 3, 3, 3))
    assert ring.slot_of(a) == 0 and ring.slot_of(b) == 1 and ring.take((1, 2, 3, 3, 3)) is None
    assert ring.slot_of(torch.empty((1, 2, 3, 3, 3), dtype=torch.uint8)) is None
    ring.release(b)
    assert ring.take((1, 2, 3, 3, 4)) is None and ring.slot_of(ring.take((1, 2, 3, 3, 3))) == 1

    from pipeline_helpers import write_tar

    good = good_samples(shards, count=1)
    bad_key, bad_sample = corrupt_sample("garbage", good, tmp_path)
    records = {r.key: r for r in scan_shards([str(write_tar(tmp_path / "ring-000000.tar", {**good, bad_key: bad_sample}))])[0]}
    (good_key,) = good
    assert records[good_key].meta["height"] == 128
    for resize in (128, 64):  # clips written straight into the slot / resized, then copied into it
        cfg = LoaderConfig(**{**RAW, "resize": resize, "augment": True})
        ring = OutputRing(3)
        ring.take(clip_shape(np.zeros((4, 8)), 64))  # the ring exists with its first slot busy
        assert ring.clips.shape == (3, 4, 3, 8, 64, 64)  # slots are stored channel-first
        result = load_sample(records[bad_key], 0, cfg, 0, ring=ring)
        assert isinstance(result, BadSampleError) and ring.busy.tolist() == [1, 0, 0]
        result = load_sample(records[good_key], 0, cfg, 0, ring=ring)
        expected = load_sample(records[good_key], 0, cfg, 0)
        assert ring.slot_of(result.clips) in (1, 2) and ring.busy.sum() == 2 and torch.equal(result.clips, expected.clips)
        assert result.clips.movedim(-1, -4).is_contiguous()


def test_reference_direct_path_equals_stacked_path(shards, monkeypatch):
    """resize == the stored short side (128): the reference backend copies crops straight from each decoded
    frame (in a worker, into shared memory); the clips equal those of the stack-then-cut path exactly, and
    agree with DALI's within decoder tolerance."""
    from pipeline.reference.decode import pyav_union_frames
    from pipeline.plan import finish_sample, plan_sample
    from pipeline.io.shard_reader import scan_shards

    common = dict(seed=6, resize=128, crop_size=96, augment=True)
    _, ref = run(shards, "reference", num_workers=1, **common)
    _, dali = run(shards, "dali", **common)
    cfg = LoaderConfig(**{**RAW, **common})
    records = {r.key: r for r in scan_shards(shards)[0]}
    worst = 0
    for a, b in zip(ref, dali, strict=True):
        assert a["key"] == b["key"] and torch.equal(a["frame_indices"], b["frame_indices"])
        worst = max(worst, int((a["clips"].int() - b["clips"].int()).abs().max()))
        for i, key in enumerate(a["key"]):
            plan = plan_sample(records[key], cfg, epoch=0)
            assert plan.views[0].resize_hw == (128, 176)  # the direct path's condition
            stacked = finish_sample(plan, torch.from_numpy(pyav_union_frames(records[key].read_video(), plan.union)))
            assert torch.equal(a["clips"][i], stacked.clips)
    assert worst <= PIXEL_TOLERANCE

    import pipeline.reference.stream as reference

    def no_stacking(*args, **kwargs):
        raise AssertionError("the direct path stacked the frames")

    monkeypatch.setattr(reference, "pyav_union_frames", no_stacking)
    result = reference.load_sample(records[ref[0]["key"][0]], 0, cfg, 0)
    assert torch.equal(result.clips, ref[0]["clips"][0])
