"""TensorBoard event files beside metrics.jsonl, read back with TensorBoard's own event reader."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from train_helpers import QUIET, TINY_DATA, TINY_MODEL, build_motion_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return build_motion_shards(tmp_path_factory.getbasetemp() / "train_motion")


def _events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})  # 0: keep every event
    acc.Reload()
    return acc


def test_training_and_eval_write_events_that_tensorboard_reads(shards, tmp_path):
    out = tmp_path / "pre"
    train.main(["pretrain", "--data", str(shards), "--arch", "c3d", *TINY_DATA, *TINY_MODEL, *QUIET, "--max-steps", "3", "--out", str(out)])
    assert list(out.glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    acc = _events(out)
    tags = set(acc.Tags()["scalars"])
    for name in ("loss", "acc", "order_acc", "speed_acc", "lr", "clips_per_s", "data_wait_pct", "grad_norm"):
        assert f"pretrain/{name}" in tags, name
        events = acc.Scalars(f"pretrain/{name}")
        assert [e.step for e in events] == [1, 2, 3]
        assert [e.value for e in events] == pytest.approx([r[name] for r in records], rel=1e-6)  # stored as float32

    # One grid of the first batch's first sample: K=3 clips (rows) of T=8 frames (columns) of 28x28 pixels.
    images = acc.Images("pretrain/input_clips")
    assert len(images) == 1 and images[0].step == 1
    assert (images[0].height, images[0].width) == (3 * 28, 8 * 28)

    res = train.main(["eval", "--data", str(shards), "--init", str(out / "checkpoint.pt"), *TINY_DATA, *QUIET])
    acc = _events(out)
    for name in ("pretext_order_acc", "pretext_speed_acc", "R@1", "R@5", "R@10", "R@20", "R@50"):
        (event,) = acc.Scalars(f"eval/{name}")
        value = res["retrieval"][name] if name.startswith("R@") else res[name]
        assert event.step == 3 and event.value == pytest.approx(value, rel=1e-6)


def test_no_tensorboard_writes_no_events(shards, tmp_path):
    out = tmp_path / "quiet"
    train.main(["pretrain", "--data", str(shards), "--arch", "c3d", *TINY_DATA, *TINY_MODEL, *QUIET, "--max-steps", "1",
                "--no-tensorboard", "--out", str(out)])
    assert (out / "metrics.jsonl").exists() and not list(out.glob("events.out.tfevents.*"))
