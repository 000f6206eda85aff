"""The demo's experiment at reduced size over several seeds, judged on confidence intervals (never one draw);
the motion dataset's defining properties; the demo's command line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import demo
from synthetic.motion import CLASSES, DESIGNS, motion_video

#: Fewer unlabelled videos, no real footage, three seeds, 6 test videos per class, 40 fine-tuning steps instead of
#: 120 (offsets part of the 100 pretraining steps the full demo gained), two fine-tuning rates to choose from instead of
#: three; the same model and pretraining.
SMALL = dataclasses.replace(demo.FULL, seeds=3, unlabeled=60, footage=False, test_per_class=6, finetune_steps=40, lr_grid=(0.0005, 0.002))


def test_reversible_design_up_and_down_are_time_reversals_with_identical_frames():
    up = motion_video("up_slow", np.random.default_rng(3), size=32, num_frames=32, design="reversible")
    down = motion_video("down_slow", np.random.default_rng(3), size=32, num_frames=32, design="reversible")
    # Same seed -> same background, textures and disks. Over one full turn of the torus (32 frames of 1 px)
    # both videos hold exactly the same frames, in opposite orders: up at t is down at -t.
    for t in range(32):
        np.testing.assert_array_equal(up[t], down[-t % 32])
    assert not np.array_equal(up[1], down[1])
    assert sorted(CLASSES) == ["down_fast", "down_slow", "sideways_fast", "sideways_slow", "up_fast", "up_slow"]


@pytest.mark.parametrize("design", ["friction", "trail"])
def test_arrow_of_time_designs_are_not_time_reversible(design):
    """What the reversible design cannot offer: up played backwards is no down video of the same scene."""
    up = motion_video("up_slow", np.random.default_rng(3), size=32, num_frames=32, design=design).astype(int)
    down = motion_video("down_slow", np.random.default_rng(3), size=32, num_frames=32, design=design).astype(int)
    assert min(np.abs(up[-t % 32] - down[t]).mean() for t in range(1, 32)) > 2  # of 255


def test_friction_slows_down_and_trail_keeps_its_pace():
    def change_per_frame(design):  # mean absolute change between consecutive frames, over many videos
        rng = np.random.default_rng(0)
        videos = np.stack([motion_video("down_fast", rng, size=32, num_frames=32, slow=1, fast=2, design=design) for _ in range(8)])
        diffs = np.abs(np.diff(videos.astype(float), axis=1)).mean(axis=(0, 2, 3, 4))
        return diffs[:8].mean(), diffs[-8:].mean()

    start, end = change_per_frame("friction")
    assert end < 0.7 * start  # the disks lose two thirds of their speed over the video
    start, end = change_per_frame("trail")
    assert end == pytest.approx(start, rel=0.15)


@pytest.mark.parametrize("design", DESIGNS)
def test_single_frames_carry_no_colour_information_about_direction(design):
    """Mean colour of frames does not depend on the direction (the trail's length does depend on the speed)."""
    rng = np.random.default_rng(0)
    means = {name: np.mean([motion_video(name, rng, size=32, num_frames=4, design=design).mean() for _ in range(30)]) for name in CLASSES}
    for speed in ("slow", "fast"):
        same_speed = [m for name, m in means.items() if name.endswith(speed)]
        assert max(same_speed) - min(same_speed) < 10  # of 255


def test_motion_is_the_requested_velocity():
    rng = np.random.default_rng(1)
    v = motion_video("down_fast", rng, size=32, num_frames=6, slow=1, fast=3).astype(int)
    moving = (v[1] != v[0]).any(-1)
    assert moving.any()
    # Every pixel of frame t+1 that belongs to the moving layer equals frame t shifted down by 3 rows.
    shifted = np.roll(v[0], 3, axis=0)
    assert np.mean((v[1] == shifted).all(-1)[moving]) > 0.5


def test_unknown_design_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown motion design 'wobble'"):
        motion_video("up_slow", np.random.default_rng(0), design="wobble")
    with pytest.raises(ValueError, match="at least 2"):
        dataclasses.replace(demo.FULL, seeds=1)


def test_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "--first-seed" in capsys.readouterr().out
    settings, out, _, _ = demo.parse_args(["--seeds", "7", "--first-seed", "3", "--out", str(tmp_path / "x")])
    assert (settings.seeds, settings.first_seed, settings.seed_list(), out) == (7, 3, [3, 4, 5, 6, 7, 8, 9], tmp_path / "x")
    with pytest.raises(SystemExit):
        demo.parse_args(["--seeds", "1"])


@pytest.mark.slow
def test_multi_seed_demo_interval(tmp_path):
    """The reduced experiment over SMALL.seeds seeds, judged on intervals over seeds, never on one draw.

    It asserts the robust part only: the pretext is learned (interval above chance). The transfer gain is
    computed and written but not asserted: with earlier settings (git history of BENCHMARKS.md) its 3-seed
    interval excluded zero with first seed 0 but not with first seed 7; with the current ones it excluded zero with first seed 7 and with
    two threads, but not with one thread and first seed 0 ([-0.18, +0.46], 2/3 seeds; BENCHMARKS.md "Demo:
    making the result robust"). The full demo reports it.
    """
    res = demo.run_experiment(tmp_path / "demo", SMALL)
    stored = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert (tmp_path / "demo" / "results.png").stat().st_size > 0
    assert [r["seed"] for r in stored["seeds"]] == SMALL.seed_list()
    assert stored["arms"]["pretrained"]["mean"].keys() >= {"clip_acc", "video_acc", "retrieval_r1"}
    for c in stored["comparisons"]:
        key = c["metric"]
        assert c.keys() >= {"a", "b", "metric", "mean_gain", "ci95", "wins", "seeds"} and c["seeds"] == SMALL.seeds
        assert stored["arms"]["pretrained"]["mean"][key] == pytest.approx(np.mean([r["arms"]["pretrained"][key] for r in stored["seeds"]]))
    assert [c["metric"] for c in stored["comparisons"]] == ["clip_acc", "video_acc", "retrieval_r1"]
    pretext = res["arms"]["pretrained"]["pretext"]
    print(json.dumps(res["comparisons"], indent=1), json.dumps(pretext, indent=1))
    # The pretext was learned on held-out videos: the whole interval over seeds is above chance, for the signed
    # speed (4-way) and for the clip order (2-way), which the reversible videos could not teach.
    assert pretext["speed"]["ci95"][0] > pretext["speed"]["chance"] + 0.2
    assert pretext["order"]["ci95"][0] > pretext["order"]["chance"]
