"""TensorBoard event files beside metrics.jsonl, read back with TensorBoard's own event reader."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from train_helpers import QUIET, TINY_DATA, TINY_MODEL


def _events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})  # 0: keep every event
    acc.Reload()
    return acc


def test_training_and_eval_write_events_that_tensorboard_reads(motion_shards, tmp_path):
    out = tmp_path / "pre"
    train.main(["pretrain", "--data", str(motion_shards), "--arch", "c3d", *TINY_DATA, *TINY_MODEL, *QUIET, "--max-steps", "3", "--out", str(out)])
    assert list(out.glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    acc = _events(out)
    tags = set(acc.Tags()["scalars"])
    assert "pretrain/acc" not in tags  # the pretext's accuracies are named: speed_acc and order_acc
    for name in ("loss", "order_acc", "speed_acc", "lr", "clips_per_s", "data_wait_pct", "grad_norm"):
        assert f"pretrain/{name}" in tags, name
        events = acc.Scalars(f"pretrain/{name}")
        assert [e.step for e in events] == [1, 2, 3]
        assert [e.value for e in events] == pytest.approx([r[name] for r in records], rel=1e-6)  # stored as float32

    # One grid of the first batch (2 samples of K=3 clips: 6 rows) of T=8 frames (columns) of 28x28 pixels.
    images = acc.Images("pretrain/input_clips")
    assert len(images) == 1 and images[0].step == 1
    assert (images[0].height, images[0].width) == (2 * 3 * 28, 8 * 28)

    res = train.main(["eval", "--data", str(motion_shards), "--init", str(out / "checkpoint.pt"), *TINY_DATA, *QUIET])
    acc = _events(out)
    for name in ("pretext_order_acc", "pretext_speed_acc", "R@1", "R@5", "R@10", "R@20", "R@50"):
        (event,) = acc.Scalars(f"eval/{name}")
        value = res["retrieval"][name] if name.startswith("R@") else res[name]
        assert event.step == 3 and event.value == pytest.approx(value, rel=1e-6)


def test_no_tensorboard_writes_no_events(motion_shards, tmp_path):
    out = tmp_path / "quiet"
    train.main(["pretrain", "--data", str(motion_shards), "--arch", "c3d", *TINY_DATA, *TINY_MODEL, *QUIET, "--max-steps", "1",
                "--no-tensorboard", "--out", str(out)])
    assert (out / "metrics.jsonl").exists() and not list(out.glob("events.out.tfevents.*"))


def test_clip_grid_puts_each_clip_on_a_row_and_its_frames_left_to_right(tmp_path):
    import io

    import numpy as np
    import torch
    from PIL import Image

    from training.tensorboard import TensorBoardLog

    mean, std = (0.45, 0.4, 0.35), (0.225, 0.25, 0.3)
    n, k, t, h, w = 2, 3, 4, 5, 6
    level = torch.arange(n * k * t, dtype=torch.float32).view(n, k, 1, t, 1, 1) * 7 / 255  # clip row r, frame f: (r*T+f)*7
    clips = (level.expand(n, k, 3, t, h, w) - torch.tensor(mean).view(1, 1, 3, 1, 1, 1)) / torch.tensor(std).view(1, 1, 3, 1, 1, 1)
    board = TensorBoardLog(tmp_path)
    board.clips("grid", clips, step=1, mean=mean, std=std)
    board.close()
    (event,) = _events(tmp_path).Images("grid")
    image = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    assert image.shape == (n * k * h, t * w, 3)
    for row in range(n * k):
        for frame in range(t):
            tile = image[row * h:(row + 1) * h, frame * w:(frame + 1) * w]
            # TensorBoard truncates x*255 to uint8, so float error may cost one level; neighbours are 7 apart.
            assert (abs(tile.astype(int) - (row * t + frame) * 7) <= 1).all(), (row, frame)
