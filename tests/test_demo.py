"""The demo's experiment at reduced size: speed-prediction pretraining must clearly beat training from scratch
on motion-defined classes, with the same fine-tuning budget. Plus the motion dataset's defining properties."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import demo
from preprocess.motion_dataset import CLASSES, motion_video

#: Fewer unlabelled videos, no real footage, shorter pretraining; the same labelled set and fine-tuning budget.
SMALL = dataclasses.replace(demo.FULL, unlabeled=60, footage=False, test_per_class=6, pretrain_steps=400)


def test_up_and_down_are_time_reversals_with_identical_frames():
    up = motion_video("up_slow", np.random.default_rng(3), size=32, num_frames=32)
    down = motion_video("down_slow", np.random.default_rng(3), size=32, num_frames=32)
    # Same seed -> same background, textures and disks. Over one full turn of the torus (32 frames of 1 px)
    # both videos hold exactly the same frames, in opposite orders: up at t is down at -t.
    for t in range(32):
        np.testing.assert_array_equal(up[t], down[-t % 32])
    assert not np.array_equal(up[1], down[1])
    assert sorted(CLASSES) == ["down_fast", "down_slow", "sideways_fast", "sideways_slow", "up_fast", "up_slow"]


def test_single_frames_carry_no_class_information():
    """Per-frame statistics do not depend on the class: mean colour of frames of each class agree."""
    rng = np.random.default_rng(0)
    means = {name: np.mean([motion_video(name, rng, size=32, num_frames=4).mean() for _ in range(30)]) for name in CLASSES}
    assert max(means.values()) - min(means.values()) < 10  # of 255


def test_motion_is_the_requested_velocity():
    rng = np.random.default_rng(1)
    v = motion_video("down_fast", rng, size=32, num_frames=6, slow=1, fast=3).astype(int)
    moving = (v[1] != v[0]).any(-1)
    assert moving.any()
    # Every pixel of frame t+1 that belongs to the moving layer equals frame t shifted down by 3 rows.
    shifted = np.roll(v[0], 3, axis=0)
    assert np.mean((v[1] == shifted).all(-1)[moving]) > 0.5


@pytest.mark.slow
def test_pretraining_beats_scratch_on_motion_classes(tmp_path):
    res = demo.run_experiment(tmp_path / "demo", SMALL)
    stored = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert stored["finetune"]["pretrained"].keys() >= {"clip_acc", "video_acc", "retrieval_r1"}
    assert stored["pretext"].keys() >= {"accuracy", "chance"}
    pre, scratch = res["finetune"]["pretrained"], res["finetune"]["scratch"]
    print(json.dumps(res, indent=1))
    # The pretext was learned (held-out videos) ...
    assert res["pretext"]["accuracy"] > res["pretext"]["chance"] + 0.1
    # ... and it transfers: a clear margin over scratch at the same fine-tuning budget.
    assert pre["clip_acc"] >= scratch["clip_acc"] + 0.1
    assert pre["video_acc"] >= scratch["video_acc"] + 0.1
    assert pre["video_acc"] >= 2 * pre["chance"]
