"""``pipeline/loader.py`` with both backends, on shards built by ``preprocess.build_shards`` from
frame-numbered videos (``conftest.shards``): frame identity (every frame of every clip is the one
``frame_indices`` names), DALI == reference, labels, short videos, DDP partition, eval coverage, epochs,
normalization, the ``Collator``, and bad samples named or skipped."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pipeline import LoaderConfig, build_loader
from pipeline_helpers import BACKENDS, PIXEL_TOLERANCE, RAW, SPEEDS, VIDEOS, corrupt_sample, frame_numbers, good_samples, run


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


# ---------------------------------------------------------------- bad samples
REASONS = {"garbage": r"unreadable video container|decoding failed", "wrong_frames": r"json says \d+ frames, the video holds \d+",
           "missing_json": r"missing KEY\.json", "h264": r"DALI video decoder failed"}
CASES = [(k, b) for k in ("garbage", "wrong_frames", "missing_json") for b in BACKENDS] + [("h264", "dali")]


@pytest.mark.parametrize("kind,backend", CASES)
def test_bad_sample_is_named_or_skipped_and_counted(shards, tmp_path, kind, backend):
    from pipeline import BadSampleError
    from pipeline_helpers import write_tar

    good = good_samples(shards)
    bad_key, bad = corrupt_sample(kind, good, tmp_path)
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



@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dali_decodes_on_after_a_bad_sample_that_was_decoded_last_alone(shards, tmp_path, seed, caplog):
    """A sample DALI fails on breaks the pipeline; the samples in flight (2 batches of 1 here) are then decoded one
    by one, and when the bad one comes last no pipeline is left: the next batch must get a new one, not an
    AttributeError (seeds 1 and 3 order the samples so). The samples in flight are searched together, so the
    batch without the culprit is not reported as one that failed "on none of its samples alone"."""
    from pipeline_helpers import write_tar

    good = good_samples(shards)
    bad_key, bad = corrupt_sample("h264", good, tmp_path)
    tar = str(write_tar(tmp_path / "mixed-000000.tar", {**good, bad_key: bad}))
    loader, batches = run([tar], "dali", skip_bad_samples=True, speeds=(1, 2), num_clips=2, batch_size=1, seed=seed)
    assert len(batches) == len(loader) == 5 and loader.stats["skipped"] >= 1
    assert "none of its samples alone" not in caplog.text
    assert {k for b in batches for k in b["key"]} == set(good)
    for b in batches:
        np.testing.assert_array_equal(frame_numbers(b["clips"].numpy()), b["frame_indices"].numpy())

def test_eval_skips_bad_sample_without_replacement(shards, tmp_path):
    from pipeline_helpers import write_tar

    good = good_samples(shards)
    bad_key, bad = corrupt_sample("garbage", good, tmp_path)
    tar = str(write_tar(tmp_path / "mixed-000000.tar", {**good, bad_key: bad}))
    loader, batches = run([tar], "reference", mode="eval", num_eval_clips=2, batch_size=3, skip_bad_samples=True)
    keys = [k for b in batches for k in b["key"]]
    assert sorted(keys) == sorted(good) and loader.stats["skipped"] == 1
