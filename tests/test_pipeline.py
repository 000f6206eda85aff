"""Both loader backends against shards built by ``preprocess.build_shards`` from frame-numbered videos:
frame identity (every frame of every clip is the one ``frames`` names), DALI == reference, labels,
short videos, DDP partition, epochs, augmentation and normalization."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from pipeline import LoaderConfig, build_loader, list_shards
from pipeline.views import ClipWriter, View, assemble_clips
from pipeline_helpers import VIDEOS, build_numbered_shards, frame_numbers

BACKENDS = ["reference", "dali"]
SPEEDS = (-8, -4, -2, -1, 1, 2, 4, 8)
# tiny clips: T=8, 64x64 output, whole frame resized (no crop/flip) so the frame number stays readable
RAW = dict(num_frames=8, speeds=SPEEDS, num_clips=4, batch_size=2, resize=64, crop_size=64, augment=False)
# Decoder tolerance between DALI (libavcodec + its own YUV->RGB) and torchcodec (libavcodec + swscale) on the
# same frames, uint8 levels after the identical resize: measured max 2 (the agreement test prints it).
PIXEL_TOLERANCE = 4


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory):
    return build_numbered_shards(tmp_path_factory.mktemp("pipeline_shards"))


@pytest.fixture(scope="session")
def shards(shard_dir):
    return list_shards(shard_dir)


@pytest.fixture(scope="session")
def key_info(shard_dir, shards):
    """key -> (source name, frames, label) from the shards' json."""
    import tarfile

    info = {}
    for tar_path in shards:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    name = meta["source"].rsplit("/", 1)[-1].split(".")[0]
                    info[member.name[: -len(".json")]] = (name, meta["frames"], meta["label"])
    return info


def run(shards, backend, *, epoch=0, normalized=False, num_workers=0, **overrides):
    loader = build_loader(shards, LoaderConfig(**{**RAW, **overrides}), backend=backend, num_workers=num_workers, normalized=normalized)
    loader.set_epoch(epoch)
    return loader, list(loader)


def test_list_shards_reads_manifest(shard_dir, shards):
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    assert shards == [str(shard_dir / e["tar"]) for e in manifest["splits"]["train"]["shards"]]
    assert len(shards) == 3  # 8 videos, at most 3 per shard
    assert list_shards(shards[:2]) == shards[:2]
    with pytest.raises(FileNotFoundError, match="split"):
        list_shards(shard_dir, split="val")


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_identity_every_clip_every_speed(shards, key_info, backend):
    """Each decoded frame is exactly the source frame ``frames`` names, in clip order, for all speeds."""
    drawn = set()
    for seed in (0, 1, 2):
        loader, batches = run(shards, backend, seed=seed)
        assert loader.backend == ("dali-cpu" if backend == "dali" else "reference")
        assert len(batches) == len(loader) == 3  # 7 eligible videos (tiny excluded), batches of 2
        for batch in batches:
            clips, frames, speeds = batch["clips"].numpy(), batch["frame_indices"].numpy(), batch["speeds"].numpy()
            assert clips.shape == (2, 4, 8, 64, 64, 3) and clips.dtype == np.uint8
            np.testing.assert_array_equal(frame_numbers(clips), frames)
            for i, key in enumerate(batch["key"]):
                n = key_info[key][1]
                for k in range(4):
                    s = speeds[i, k]
                    assert np.all(np.diff(frames[i, k]) == s)  # step |s|, reversed when s < 0
                    assert 0 <= frames[i, k].min() and frames[i, k].max() < n
                drawn |= set(speeds[i].tolist())
    assert drawn == set(SPEEDS), "every forward and reverse speed should be exercised"


def test_dali_and_reference_agree(shards):
    _, ref = run(shards, "reference", seed=5, resize=72, crop_size=64, augment=True)
    _, dali = run(shards, "dali", seed=5, resize=72, crop_size=64, augment=True)
    worst = 0
    for a, b in zip(ref, dali, strict=True):
        assert a["key"] == b["key"]
        for name in ("frame_indices", "speeds", "speed_label", "order_label", "label"):
            assert torch.equal(a[name], b[name]), name
        worst = max(worst, int((a["clips"].int() - b["clips"].int()).abs().max()))
    print(f"max |DALI - reference| = {worst} uint8 levels")
    assert worst <= PIXEL_TOLERANCE


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_consistent_with_speeds(shards, key_info, backend):
    _, batches = run(shards, backend, seed=3)
    perms = list(itertools.permutations(range(4)))
    for batch in batches:
        for i, key in enumerate(batch["key"]):
            speeds = batch["speeds"][i].tolist()
            assert [SPEEDS[j] for j in batch["speed_label"][i].tolist()] == speeds
            order = perms[int(batch["order_label"][i])]
            assert [speeds[j] for j in order] == sorted(speeds)
            name, _, label = key_info[key]
            assert int(batch["label"][i]) == label == {"walk": 1, "run": 0}[VIDEOS[name][0]]
            assert batch["video_id"][i] == key


def test_short_videos_excluded_and_counted(shards, key_info):
    loader, batches = run(shards, "reference", seed=0)
    tiny = next(k for k, v in key_info.items() if v[0] == "tiny")
    assert loader.stats["excluded"] == 1
    assert list(loader.stats["excluded_reasons"].values()) == [1]
    assert "too short for 4 distinct speeds" in next(iter(loader.stats["excluded_reasons"]))
    assert all(tiny not in b["key"] for b in batches)
    short = next(k for k, v in key_info.items() if v[0] == "short")  # 40 frames: +-8 (span 57) never fits
    for seed in range(4):
        _, batches = run(shards, "reference", seed=seed, batch_size=7)
        for b in batches:
            i = b["key"].index(short)
            assert not set(b["speeds"][i].tolist()) & {-8, 8}
    # finetune mode needs only T frames: the 12-frame video is in
    loader = build_loader(shards, LoaderConfig(**{**RAW, "mode": "finetune"}), backend="reference", num_workers=0)
    assert loader.stats["excluded"] == 0 and len(loader) == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_ddp_ranks_disjoint_and_equally_long(shards, backend):
    seen = []
    for rank in (0, 1):
        cfg = LoaderConfig(**{**RAW, "batch_size": 1})
        loader = build_loader(shards, cfg, backend=backend, rank=rank, world_size=2, num_workers=0, normalized=False)
        loader.set_epoch(1)
        keys = [k for b in loader for k in b["key"]]
        assert len(loader) == 3 and len(keys) == 3  # 7 eligible // 2 ranks = 3 each (1 dropped)
        seen.append(set(keys))
    assert not seen[0] & seen[1]


def test_eval_every_video_once_across_ranks(shards, key_info):
    keys = []
    for rank in (0, 1):
        cfg = LoaderConfig(**{**RAW, "mode": "eval", "num_eval_clips": 3, "batch_size": 3})
        loader, batches = None, None
        loader = build_loader(shards, cfg, backend="reference", rank=rank, world_size=2, num_workers=0, normalized=False)
        batches = list(loader)
        assert len(batches) == len(loader) == 2 and len(batches[-1]["key"]) == 1  # 4 videos: 3 + 1
        for b in batches:
            assert b["clips"].shape[1:3] == (3, 8)
            assert torch.all(b["speeds"] == 1) and torch.all(b["order_label"] == 0)
            for i, key in enumerate(b["key"]):
                n = key_info[key][1]
                assert b["frame_indices"][i, :, 0].tolist() == np.rint(np.linspace(0, n - 8, 3)).astype(int).tolist()
            np.testing.assert_array_equal(frame_numbers(b["clips"].numpy()), b["frame_indices"].numpy())
        keys += [k for b in batches for k in b["key"]]
    assert sorted(keys) == sorted(key_info)  # all 8 (the 12-frame one fits T=8), each exactly once


def test_epochs_reshuffle_and_are_reproducible(shards):
    loader = build_loader(shards, LoaderConfig(**RAW), backend="reference", num_workers=2, normalized=False)
    loader.set_epoch(0)
    first = [(b["key"], b["frame_indices"]) for b in loader]
    loader.set_epoch(0)
    again = [(b["key"], b["frame_indices"]) for b in loader]
    loader.set_epoch(1)
    other = [(b["key"], b["frame_indices"]) for b in loader]
    assert [k for k, _ in first] == [k for k, _ in again]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again))
    assert [k for k, _ in first] != [k for k, _ in other]


def test_reference_workers_live_for_the_run_and_prefetch_the_next_epoch(shards, tmp_path):
    """One set of worker processes serves every epoch and starts on epoch e+1 while e ends; whatever the
    order of passes (whole, abandoned after one batch, repeated, skipping epochs), every batch equals the
    one the in-process loader draws, including a bad sample skipped and replaced."""
    import os
    import time

    from pipeline_helpers import write_tar

    good = _good_samples(shards)
    bad_key, bad_sample = _corrupt("garbage", good, tmp_path)
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

    good = _good_samples(shards, count=1)
    bad_key, bad_sample = _corrupt("garbage", good, tmp_path)
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


def test_normalized_output_is_standardized_uint8(shards):
    common = dict(seed=4, augment=True, resize=72, crop_size=64, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    _, raw = run(shards, "reference", **common)
    _, norm = run(shards, "reference", normalized=True, **common)
    x, y = raw[0]["clips"], norm[0]["clips"]  # (B, K, T, H, W, 3) uint8 / (B, K, 3, T, H, W) float
    assert y.dtype == torch.float32 and y.shape == (2, 4, 3, 8, 64, 64)
    expected = (x.float() / 255 - torch.tensor([0.4, 0.5, 0.6])) / torch.tensor([0.2, 0.25, 0.3])
    torch.testing.assert_close(y, expected.permute(0, 1, 5, 2, 3, 4))


def test_collator_normalizes_each_sample_into_the_batch_and_releases_it():
    """The loader's batch is ``normalize`` of the stacked clips, built one sample at a time; each result's
    ``release`` is called once its clips are in the batch, and the last, smaller batch is cut to size."""
    from pipeline.views import normalize
    from pipeline.loader import Collator
    from pipeline.plan import SampleResult

    cfg = LoaderConfig(mean=(0.1, 0.5, 0.9), std=(0.2, 0.3, 0.4))
    released = []

    def result(i, clips):
        return SampleResult(key=f"k{i}", video_id=f"v{i}", label=i, frame_indices=np.zeros((2, 5)), speeds=np.ones(2),
                            speed_label=np.zeros(2), order_label=i, clips=clips, release=lambda: released.append(i))

    samples = [torch.randint(0, 256, (2, 3, 5, 7, 3), dtype=torch.uint8) for _ in range(3)]
    slot = torch.randint(0, 256, (2, 3, 5, 7, 3), dtype=torch.uint8).movedim(-1, -4).contiguous()  # channel-first, as ring slots are
    samples.append(slot.movedim(-4, -1))
    for normalized in (True, False):
        released.clear()
        batch = Collator(cfg, 5, normalized=normalized)
        for i, clips in enumerate(samples):
            batch.add(result(i, clips))
            assert released == list(range(i + 1))
        out = batch.finish()
        expected = normalize(torch.stack(samples), cfg.mean, cfg.std) if normalized else torch.stack(samples)
        assert out["clips"].dtype == expected.dtype and torch.equal(out["clips"], expected)
        assert out["key"] == ["k0", "k1", "k2", "k3"] and out["order_label"].tolist() == [0, 1, 2, 3]
    full = Collator(cfg, 1)
    full.add(result(0, samples[0]))
    with pytest.raises(ValueError, match="full"):
        full.add(result(1, samples[1]))
    two = Collator(cfg, 2)
    two.add(result(0, samples[0]))
    released.clear()
    with pytest.raises(ValueError, match="shape"):  # clips of another shape than the batch's: the memory is given back anyway
        two.add(result(5, torch.zeros((2, 3, 5, 8, 3), dtype=torch.uint8)))
    assert released == [5]
    with pytest.raises(ValueError, match="shape"):  # never a silent resize of a view into a batch
        normalize(samples[0], cfg.mean, cfg.std, out=torch.empty((2, 3, 3, 5, 8)))
    with pytest.raises(ValueError, match="no sample"):
        Collator(cfg, 1).finish()


def test_augmentation_is_one_crop_and_flip_per_clip():
    frames = torch.randint(0, 256, (5, 20, 30, 3), dtype=torch.uint8)
    positions = np.array([[4, 2, 0], [1, 1, 3]])
    views = [View((20, 30), 3, 7, 10, False), View((20, 30), 10, 20, 10, True)]
    clips = assemble_clips(frames, positions, views)
    assert clips.shape == (2, 3, 10, 10, 3)
    torch.testing.assert_close(clips[0], frames[[4, 2, 0], 3:13, 7:17])
    torch.testing.assert_close(clips[1], frames[[1, 1, 3], 10:20, 20:30].flip(2))


def test_clip_writer_is_assemble_clips_one_frame_at_a_time():
    """The reference backend's direct path (no resize) gives exactly what ``assemble_clips`` gives, for any
    positions (repeats, shared frames), crops touching every edge, and flips; it reports frames not given."""
    rng = np.random.default_rng(0)
    frames = torch.randint(0, 256, (9, 20, 30, 3), dtype=torch.uint8)
    positions = rng.integers(0, 9, size=(4, 6))
    positions[0] = [0, 0, 8, 8, 3, 3]
    views = [View((20, 30), 0, 0, 10, True), View((20, 30), 10, 20, 10, True), View((20, 30), 5, 0, 10, False),
             View((20, 30), 10, 20, 10, False)]
    writer = ClipWriter(positions, views)
    used = sorted(set(positions.flat))
    for u in used[:-1]:
        writer.put(u, frames[u].numpy())
    assert writer.missing() == [used[-1]]
    writer.put(used[-1], frames[used[-1]].numpy())
    assert writer.missing() == []
    assert torch.equal(writer.clips, assemble_clips(frames, positions, views))
    with pytest.raises(ValueError, match="shape"):
        writer.put(0, frames[0, :10].numpy())


def test_gather_clips_is_assemble_clips_for_a_whole_batch():
    """The DALI GPU path's batched cut (one resize and one gather per group of equal sizes) gives exactly what
    ``assemble_clips`` gives sample by sample: mixed frame sizes, resized and not, flips, repeated frames,
    samples with different clip counts. Checked on the CPU (the same torch ops run on CUDA there)."""
    from pipeline.views import assemble_batch, gather_clips

    rng = np.random.default_rng(3)
    samples = []  # (frames, positions, views)
    for n, (height, width, resize, clips) in enumerate([(20, 30, (20, 30), 2), (24, 36, (20, 30), 3), (20, 30, (20, 30), 1),
                                                        (24, 36, (20, 30), 2), (20, 26, (20, 26), 4)]):
        frames = torch.randint(0, 256, (5 + n, height, width, 3), dtype=torch.uint8)
        positions = rng.integers(0, len(frames), size=(clips, 4))
        views = [View(resize, int(rng.integers(0, resize[0] - 9)), int(rng.integers(0, resize[1] - 9)), 10, bool(k % 2))
                 for k in range(clips)]
        samples.append((frames, positions, views))
    expected = [assemble_clips(*sample) for sample in samples]
    for cut in (gather_clips, assemble_batch):
        got = cut(*(list(part) for part in zip(*samples)))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert a.shape == b.shape and torch.equal(a, b)
    assert gather_clips([], [], []) == []
    with pytest.raises(ValueError, match="share one resize"):
        gather_clips([samples[0][0]], [samples[0][1]], [[View((20, 30), 0, 0, 10, False), View((20, 30), 0, 0, 8, False)]])


def _random_yuv_frame(rng, width: int, height: int, colorspace: int):
    import av

    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8)[: plane.line_size * plane.height].reshape(plane.height, plane.line_size)
        rows[:] = rng.integers(0, 256, rows.shape, dtype=np.uint8)
    frame.colorspace = colorspace
    return frame


@pytest.mark.parametrize("size", [9, 10, 16])
@pytest.mark.parametrize("colorspace", [1, 5], ids=["bt709", "bt601"])
@pytest.mark.parametrize("layout", ["channels_last", "ring_slot"])
def test_yuv_clip_writer_is_bit_identical_to_converting_whole_frames(size, colorspace, layout):
    """Crops cut in YUV (even-aligned boxes), converted in one tall planar-RGB frame per sample == whole
    frames converted to packed RGB and cut by ``assemble_clips``: odd and even offsets, crops on every
    edge, flips, repeated frames; boxes of 10, 12 and 18 pixels (the tall frame is widened to 16 or 32);
    into a new tensor or a channel-first ring slot. A second sample of the same shape (it reuses the
    first's tall frame) is exact too."""
    from pipeline.reference.decode import rgb_view
    from pipeline.reference.yuv_clips import YuvClipWriter

    rng = np.random.default_rng(size)
    height, width = 20, 22
    positions = np.array([[0, 0, 6, 3], [1, 2, 3, 4], [6, 5, 4, 3], [2, 2, 2, 2], [5, 0, 1, 6]])
    for _ in range(2):
        frames = [_random_yuv_frame(rng, width, height, colorspace) for _ in range(7)]
        views = [View((height, width), 0, 0, size, False), View((height, width), height - size, width - size, size, True),
                 View((height, width), 3, 5, size, True), View((height, width), 2, 4, size, False),
                 View((height, width), 1, width - size, size, bool(rng.integers(2)))]
        out = None
        if layout == "ring_slot":  # what OutputRing.take hands out: (K, T, S, S, 3) over (K, 3, T, S, S) memory
            out = torch.zeros((len(views), 3, positions.shape[1], size, size), dtype=torch.uint8).movedim(1, -1)
        assert YuvClipWriter.accepts(frames[0], views)
        writer = YuvClipWriter(positions, views, frames[0], out=out)
        for u, frame in enumerate(frames):
            writer.put(u, frame)
        assert writer.missing() == []
        whole = torch.from_numpy(np.stack([rgb_view(f).copy() for f in frames]))
        clips = writer.finish()
        assert out is None or clips.data_ptr() == out.data_ptr()
        assert torch.equal(clips, assemble_clips(whole, positions, views))
    with pytest.raises(ValueError, match="expected yuv420p"):
        writer.put(0, frames[0].reformat(format="yuv444p"))


def test_yuv_clip_writer_declines_what_it_cannot_cut():
    import av

    from pipeline.reference.yuv_clips import YuvClipWriter

    views = [View((16, 22), 0, 0, 14, False)]
    assert YuvClipWriter.accepts(av.VideoFrame(22, 16, "yuv420p"), views)
    assert not YuvClipWriter.accepts(av.VideoFrame(22, 16, "yuvj422p"), views)  # e.g. MJPEG: other chroma layout
    assert not YuvClipWriter.accepts(av.VideoFrame(22, 16, "yuv420p"), [View((16, 22), 0, 0, 16, False)])  # no room for the box
    assert not YuvClipWriter.accepts(av.VideoFrame(24, 16, "yuv420p"), views)  # frames of another size than the views'


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


def test_augmented_clips_use_the_drawn_views(shards):
    """augment=True: each clip is the drawn window/flip of its resized frames (recomputed independently
    from the sample's generator), windows are within the frame and vary between clips."""
    from bench.peers import torchcodec_frames
    from pipeline.plan import plan_sample
    from pipeline.io.shard_reader import scan_shards

    cfg = LoaderConfig(**{**RAW, "augment": True, "resize": 64, "crop_size": 48, "seed": 9})
    loader = build_loader(shards, cfg, backend="dali", num_workers=1, normalized=False)
    records = {r.key: r for r in scan_shards(shards)[0]}
    views, flips = set(), set()
    for batch in loader:
        for i, key in enumerate(batch["key"]):
            plan = plan_sample(records[key], cfg, epoch=0)
            decoded = torchcodec_frames(records[key].read_video(), plan.union)  # (U, 128, 176, 3)
            resized = torch.nn.functional.interpolate(decoded.permute(0, 3, 1, 2).float(), size=(64, 88), mode="bilinear",
                                                      antialias=True, align_corners=False).round().clamp(0, 255)
            for k, v in enumerate(plan.views):
                assert v.resize_hw == (64, 88) and 0 <= v.top <= 16 and 0 <= v.left <= 40
                want = resized[plan.positions[k], :, v.top : v.top + 48, v.left : v.left + 48]  # (T, 3, 48, 48)
                want = want.flip(-1) if v.flip else want
                got = batch["clips"][i, k].permute(0, 3, 1, 2).float()
                assert (got - want).abs().max() <= PIXEL_TOLERANCE
                views.add((v.top, v.left))
                flips.add(v.flip)
    assert len(views) > 10 and flips == {True, False}


# ---------------------------------------------------------------- bad samples
def _good_samples(shards, count=4):
    from preprocess_helpers import read_samples

    good = {}
    for tar_path in shards:
        for key, members in read_samples([tar_path]).items():
            if json.loads(members["json"])["frames"] >= 40 and len(good) < count:
                good[key] = members
    return good


def _corrupt(kind, good, tmp_path):
    from pipeline_helpers import mp4_bytes_h264

    donor_key, donor = next(iter(good.items()))
    meta = json.loads(donor["json"])
    if kind == "garbage":
        bad = {**donor, "mp4": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()}
    elif kind == "wrong_frames":
        bad = {**donor, "json": json.dumps({**meta, "frames": meta["frames"] + 200}).encode()}
    elif kind == "missing_json":
        bad = {k: v for k, v in donor.items() if k != "json"}
    else:  # h264: a valid video DALI's CPU decoder cannot decode (the container check passes)
        bad = {**donor, "mp4": mp4_bytes_h264(meta["frames"], tmp_path), "json": json.dumps({**meta, "codec": "h264"}).encode()}
    return "zz_bad_" + kind, bad


REASONS = {"garbage": r"unreadable video container|decoding failed", "wrong_frames": r"json says \d+ frames, the video holds \d+",
           "missing_json": r"missing KEY\.json", "h264": r"DALI video decoder failed"}
CASES = [(k, b) for k in ("garbage", "wrong_frames", "missing_json") for b in BACKENDS] + [("h264", "dali")]


@pytest.mark.parametrize("kind,backend", CASES)
def test_bad_sample_is_named_or_skipped_and_counted(shards, tmp_path, kind, backend):
    from pipeline import BadSampleError
    from pipeline_helpers import write_tar

    good = _good_samples(shards)
    bad_key, bad = _corrupt(kind, good, tmp_path)
    tar = str(write_tar(tmp_path / "mixed-000000.tar", {**good, bad_key: bad}))  # no index: the loader scans the tar
    cfg = dict(speeds=(1, 2), num_clips=2, batch_size=5)

    with pytest.raises(BadSampleError, match=REASONS[kind]) as caught:
        _, _ = run([tar], backend, **cfg)
    assert caught.value.shard == tar and caught.value.key == bad_key
    assert bad_key in str(caught.value) and tar in str(caught.value)

    loader, batches = run([tar], backend, skip_bad_samples=True, **cfg)
    assert loader.stats["skipped"] == 1 and loader.stats["skipped_samples"][0]["key"] == bad_key
    expected_batches = 0 if kind == "missing_json" else 1  # 4 good samples cannot fill a batch of 5 ...
    if kind != "missing_json":  # ... unless the bad one was eligible: it is replaced by a re-draw
        assert len(batches) == len(loader) == expected_batches
        keys = batches[0]["key"]
        assert bad_key not in keys and len(keys) == 5 and set(keys) == set(good)
        np.testing.assert_array_equal(frame_numbers(batches[0]["clips"].numpy()), batches[0]["frame_indices"].numpy())
    else:
        assert len(loader) == 0 and batches == []


def test_eval_skips_bad_sample_without_replacement(shards, tmp_path):
    from pipeline_helpers import write_tar

    good = _good_samples(shards)
    bad_key, bad = _corrupt("garbage", good, tmp_path)
    tar = str(write_tar(tmp_path / "mixed-000000.tar", {**good, bad_key: bad}))
    loader, batches = run([tar], "reference", mode="eval", num_eval_clips=2, batch_size=3, skip_bad_samples=True)
    keys = [k for b in batches for k in b["key"]]
    assert sorted(keys) == sorted(good) and loader.stats["skipped"] == 1


# ---------------------------------------------------------------- CLIs
@pytest.mark.slow
def test_preview_cli_end_to_end(shards, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    out = tmp_path / "preview"
    cmd = [sys.executable, "-m", "pipeline", "preview", *shards, "--backend", "dali", "--mode", "pretrain", "--num-samples", "3",
           "--seed", "7", "--no-augment", "--num-frames", "8", "--num-clips", "3", "--crop-size", "64", "--resize", "64", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    data = np.load(out / "clips.npz")
    assert data["clips"].shape == (3, 3, 8, 64, 64, 3) and data["clips"].dtype == np.uint8
    assert data["frame_indices"].shape == (3, 3, 8) and data["speeds"].shape == (3, 3) and data["keys"].shape == (3,)
    assert data["labels"].shape == (3,) and set(data["labels"].tolist()) <= {0, 1}
    np.testing.assert_array_equal(frame_numbers(data["clips"]), data["frame_indices"])
    assert np.all(np.diff(data["frame_indices"], axis=-1) == data["speeds"][..., None])
    image = Image.open(out / "preview.png")
    assert image.size[1] >= 9 * 64 and image.size[0] >= 8 * 64  # one row per clip, one column per frame


@pytest.mark.slow
def test_bench_measures_every_method(shards, monkeypatch):
    from bench import loader as bench

    monkeypatch.setattr(bench, "LIMIT_SECONDS", 0.05)  # the decode limit's passes: one or two here
    cfg = LoaderConfig(num_frames=8, speeds=(-2, -1, 1, 2), num_clips=2, batch_size=2, resize=64, crop_size=64)
    result = bench.run_all(shards, cfg, samples=4, workers=1, per_speed=False, repeats=2)
    assert result["default"] == "reference"
    assert set(result["clips_per_s"]) == {"dali", "reference", "pyav_per_clip", "torchcodec_per_clip", "decord_per_clip"}
    assert all(v is not None and v > 0 for v in result["clips_per_s"].values()), result["detail"]["errors"]
    assert result["detail"]["decoded_frames_per_clip"] >= 8  # at least the clip's span, plus GOP lead-in
    assert result["decode_limit_clips_per_s"] > 0 and result["config"]["workers"] == 1
    rounds = result["detail"]["rounds"]
    assert len(rounds) == result["config"]["repeats"] == 2
    assert all(set(r["decode_limit_after"]) == set(result["clips_per_s"]) for r in rounds)  # a limit after every method
    ratios = [r["clips_per_s"]["reference"] / r["decode_limit_after"]["reference"] for r in rounds]
    assert result["default_vs_decode_limit"] == pytest.approx(np.median(ratios), abs=2e-3)  # side-by-side ratios, median
    assert "decode_limit" in bench.table(result) and "medians of 2 rounds" in bench.table(result)
    with pytest.raises(ValueError, match="repeats"):
        bench.run_once(shards, cfg, samples=4, workers=1, repeats=0)


def test_bench_records_a_method_that_cannot_run_with_its_reason(shards, monkeypatch):
    from bench import loader as bench

    real_time_loader = bench._time_loader

    def no_dali(shards, cfg, backend, samples, workers, remote=None):
        if backend == "dali":
            raise RuntimeError("no DALI here")
        return real_time_loader(shards, cfg, backend, samples, workers, remote)

    def broken_peer(data, indices):
        raise OSError("decoder missing")

    monkeypatch.setattr(bench, "_time_loader", no_dali)
    monkeypatch.setattr(bench, "LIMIT_SECONDS", 0.05)
    monkeypatch.setitem(bench.PEERS, "decord_per_clip", broken_peer)
    cfg = LoaderConfig(num_frames=8, speeds=(-2, -1, 1, 2), num_clips=2, batch_size=2, resize=64, crop_size=64)
    result = bench.run_all(shards, cfg, samples=4, workers=0, per_speed=False, repeats=2)
    assert result["clips_per_s"]["dali"] is None and result["clips_per_s"]["decord_per_clip"] is None
    assert result["not_run"] == {"dali": "RuntimeError: no DALI here", "decord_per_clip": "OSError: decoder missing"}
    assert result["clips_per_s"]["reference"] > 0 and result["clips_per_s"]["pyav_per_clip"] > 0
    assert "dali did not run: RuntimeError: no DALI here" in bench.table(result)
    assert result["detail"]["vs_decode_limit"]["dali"] is None  # no rate, no ratio, no limit measured after it
    assert all(set(r["decode_limit_after"]) == {"reference", "pyav_per_clip", "torchcodec_per_clip"} for r in result["detail"]["rounds"])
    with pytest.raises(RuntimeError, match="no decodable frame"):
        bench._decode_rate([])


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_mode_one_labelled_speed1_clip(shards, key_info, backend):
    loader, batches = run(shards, backend, mode="finetune", batch_size=4, seed=2)
    assert len(batches) == len(loader) == 2  # all 8 videos have >= T=8 frames
    for b in batches:
        assert b["clips"].shape == (4, 1, 8, 64, 64, 3)
        assert torch.all(b["speeds"] == 1) and torch.all(b["speed_label"] == SPEEDS.index(1)) and torch.all(b["order_label"] == 0)
        assert torch.all(b["frame_indices"][:, 0, 1:] - b["frame_indices"][:, 0, :-1] == 1)
        np.testing.assert_array_equal(frame_numbers(b["clips"].numpy()), b["frame_indices"].numpy())
        assert b["label"].tolist() == [key_info[k][2] for k in b["key"]]


@pytest.fixture(scope="module")
def long_record(tmp_path_factory):
    """One 1,200-frame frame-numbered video (about 160 KB as VP9, GOP 16) in a shard."""
    from pipeline.io.shard_reader import scan_shards

    out = build_numbered_shards(tmp_path_factory.mktemp("long_video"), videos={"long": ("walk", 1200)})
    (record,), _ = scan_shards(list_shards(out))
    return record


@pytest.mark.parametrize("gop", [16, 1, 1000, None], ids=["stored", "too-small", "too-large", "unknown"])
def test_reference_decode_reads_only_the_packets_it_needs(long_record, gop):
    """Frames far apart in a long video come back exactly (frame numbers), whatever the GOP hint that
    decides when to seek, and reading them touches a fraction of the file (the seeks skip the rest)."""
    from pipeline.reference.decode import pyav_union_decode

    record, size = long_record, long_record.members[long_record.video_ext][1]
    wanted = [3, 4, 5, 600, 601, 1150, 1199]
    with record.open_video() as video:
        frames = [frame for _, frame in pyav_union_decode(video, wanted, gop=gop)]
        assert list(frame_numbers(np.stack(frames))) == wanted
        if gop != 1000:  # a too-large hint decodes on where a seek would have paid: slower, still exact
            assert video.bytes_read < 0.5 * size, (video.bytes_read, size)
    with record.open_video() as video:  # one frame near the start: the rest of the file is never read
        (frame,) = [f for _, f in pyav_union_decode(video, [2], gop=gop)]
        assert frame_numbers(frame[None])[0] == 2 and video.bytes_read < 0.3 * size, (video.bytes_read, size)


def test_host_memory_keeps_large_freed_blocks_on_glibc():
    """The loader's process keeps freed batch buffers for reuse (malloc's mmap threshold raised, or glibc's
    cap where the larger value is refused); the call is idempotent."""
    import platform

    from pipeline.host_memory import MMAP_THRESHOLD, MMAP_THRESHOLD_CAP, keep_freed_memory

    first = keep_freed_memory()
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert first in (MMAP_THRESHOLD, MMAP_THRESHOLD_CAP) and keep_freed_memory() == first


def test_profile_loader_reports_the_worker_and_training_process_costs(shards):
    """``bench.profile_loader``: the worker's ``load_sample`` profile (shares of every group sum to 1) and
    the costs per sample of a real loader run, the worker processes' CPU found through their pids."""
    import platform

    from pipeline.io.shard_reader import scan_shards
    from bench.profile_loader import training_process_costs, worker_profile

    cfg = LoaderConfig(num_frames=8, speeds=(-2, -1, 1, 2), num_clips=2, batch_size=2, resize=64, crop_size=64)
    costs = training_process_costs(shards, cfg, workers=1, epochs=2)
    assert set(costs) == {"receive_ms_per_sample", "collate_ms_per_sample", "workers_cpu_ms_per_sample", "wall_ms_per_sample"}
    assert costs["wall_ms_per_sample"] > 0 and costs["receive_ms_per_sample"] >= 0 and costs["collate_ms_per_sample"] > 0
    if platform.system() == "Linux":  # read from /proc (clock ticks: a short run may count 0)
        assert costs["workers_cpu_ms_per_sample"] is not None and costs["workers_cpu_ms_per_sample"] >= 0
    profile = worker_profile(scan_shards(shards)[0][:4], cfg, epochs=1)
    assert profile["ms_per_sample"] > 0 and sum(profile["shares"].values()) == pytest.approx(1, abs=0.01)
