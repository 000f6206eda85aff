"""``pipeline/dali/stream.py``: the drawn views applied to DALI's frames, and the decoder options that
change DALI's defaults (no black frames past the end, no pinned threads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import LoaderConfig, build_loader
from pipeline.io.shard_reader import scan_shards
from pipeline_helpers import PIXEL_TOLERANCE, RAW


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


def test_decoder_options_are_dali_arguments_that_change_its_defaults():
    import nvidia.dali.backend as dali_backend

    from pipeline.dali.stream import decoder_options

    schema = dali_backend.GetSchema("decoders__Video")
    mixed = decoder_options(mixed=True)
    assert mixed == {"device": "mixed", "pad_mode": "none", "affine": False}
    assert all(schema.HasArgument(name) for name in mixed if name != "device")
    # both defaults are what the options exist to change: pinned threads, black-frame padding
    assert schema.GetArgumentDefaultValueString("affine") == "True"
    assert schema.GetArgumentDefaultValueString("pad_mode") == "'constant'"
    assert "affine" not in decoder_options(mixed=False)


def test_frame_past_the_end_is_an_error_not_a_black_frame(vp9_long):
    from pipeline.dali.stream import build_decode_pipeline

    record = scan_shards(vp9_long)[0][0]
    pipe = build_decode_pipeline(batch_size=1, num_threads=1, device_id=None)
    assert pipe.num_threads == 1
    pipe.feed_input("encoded", [np.frombuffer(record.read_video(), np.uint8)])
    pipe.feed_input("frame_indices", [np.array([record.video_frames - 1, record.video_frames], np.int32)])
    pipe.schedule_run()
    with pytest.raises(RuntimeError):
        pipe.outputs()
