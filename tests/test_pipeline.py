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
from pipeline.augment import View, assemble_clips
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
            clips, frames, speeds = batch["clips"].numpy(), batch["frames"].numpy(), batch["speeds"].numpy()
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
        for name in ("frames", "speeds", "speed_label", "order_label", "label"):
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
    # train mode needs only T frames: the 12-frame video is in
    loader = build_loader(shards, LoaderConfig(**{**RAW, "mode": "train"}), backend="reference", num_workers=0)
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
                assert b["frames"][i, :, 0].tolist() == np.rint(np.linspace(0, n - 8, 3)).astype(int).tolist()
            np.testing.assert_array_equal(frame_numbers(b["clips"].numpy()), b["frames"].numpy())
        keys += [k for b in batches for k in b["key"]]
    assert sorted(keys) == sorted(key_info)  # all 8 (the 12-frame one fits T=8), each exactly once


def test_epochs_reshuffle_and_are_reproducible(shards):
    loader = build_loader(shards, LoaderConfig(**RAW), backend="reference", num_workers=2, normalized=False)
    loader.set_epoch(0)
    first = [(b["key"], b["frames"]) for b in loader]
    loader.set_epoch(0)
    again = [(b["key"], b["frames"]) for b in loader]
    loader.set_epoch(1)
    other = [(b["key"], b["frames"]) for b in loader]
    assert [k for k, _ in first] == [k for k, _ in again]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again))
    assert [k for k, _ in first] != [k for k, _ in other]


def test_normalized_output_is_standardized_uint8(shards):
    common = dict(seed=4, augment=True, resize=72, crop_size=64, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    _, raw = run(shards, "reference", **common)
    _, norm = run(shards, "reference", normalized=True, **common)
    x, y = raw[0]["clips"], norm[0]["clips"]  # (B, K, T, H, W, 3) uint8 / (B, K, 3, T, H, W) float
    assert y.dtype == torch.float32 and y.shape == (2, 4, 3, 8, 64, 64)
    expected = (x.float() / 255 - torch.tensor([0.4, 0.5, 0.6])) / torch.tensor([0.2, 0.25, 0.3])
    torch.testing.assert_close(y, expected.permute(0, 1, 5, 2, 3, 4))


def test_augmentation_is_one_crop_and_flip_per_clip():
    frames = torch.randint(0, 256, (5, 20, 30, 3), dtype=torch.uint8)
    positions = np.array([[4, 2, 0], [1, 1, 3]])
    views = [View((20, 30), 3, 7, 10, False), View((20, 30), 10, 20, 10, True)]
    clips = assemble_clips(frames, positions, views)
    assert clips.shape == (2, 3, 10, 10, 3)
    torch.testing.assert_close(clips[0], frames[[4, 2, 0], 3:13, 7:17])
    torch.testing.assert_close(clips[1], frames[[1, 1, 3], 10:20, 20:30].flip(2))


def test_augmented_clips_use_the_drawn_views(shards):
    """augment=True: each clip is the drawn window/flip of its resized frames (recomputed independently
    from the sample's generator), windows are within the frame and vary between clips."""
    from pipeline.decode import torchcodec_frames
    from pipeline.plan import plan_sample
    from pipeline.shards import scan_shards

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
