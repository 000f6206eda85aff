"""training/logs.py: curves.png and the progress line name every accuracy a run records (the pretext's per-clip
speed and clip order, fine-tuning's classification, validation's video accuracy)."""

from __future__ import annotations

import json

import pytest

import train
from train_helpers import QUIET, TINY_DATA, TINY_MODEL, build_motion_shards
from training.logs import accuracy_text, curve_lines, read_jsonl

PRETEXT = [{"step": 1, "loss": 3.0, "order_acc": 0.25, "speed_acc": 0.5, "lr": 0.1, "data_wait_pct": 10.0}]
FINETUNE = [{"step": 1, "loss": 2.0, "acc": 0.5, "lr": 0.1, "data_wait_pct": 5.0}]
VALIDATION = [{"step": 1, "epoch": 0, "video_acc": 0.75, "clip_acc": 0.5, "loss": 1.5, "best": True}]


def test_accuracy_text_names_each_accuracy():
    assert accuracy_text(PRETEXT[0]) == "speed acc 0.500 order acc 0.250"
    assert accuracy_text({"speed_acc": 0.125}) == "speed acc 0.125"
    assert accuracy_text(FINETUNE[0]) == "acc 0.500"


def test_the_accuracy_panel_draws_speed_and_order_for_pretraining_and_validation_points_for_fine_tuning():
    panels = dict(curve_lines(PRETEXT))
    assert panels["accuracy"] == [("train", "speed_acc", "speed, per clip (train)"), ("train", "order_acc", "clip order (train)")]
    panels = dict(curve_lines(FINETUNE, VALIDATION))
    assert panels["accuracy"] == [("train", "acc", "classification (train)"), ("validation", "video_acc", "video acc (validation)")]
    assert panels["loss"] == [("train", "loss", "loss (train)"), ("validation", "loss", "clip loss (validation)")]
    assert [title for title, _ in curve_lines(FINETUNE)] == ["loss", "accuracy", "learning rate", "data wait (% of step)"]


def test_pretraining_curves_hold_the_speed_accuracy(tmp_path_factory, tmp_path):
    shards = build_motion_shards(tmp_path_factory.getbasetemp() / "train_motion")
    out = tmp_path / "pre"
    summary = train.main(["pretrain", "--data", str(shards), "--arch", "c3d", *TINY_DATA, *TINY_MODEL, *QUIET, "--max-steps", "2",
                          "--no-tensorboard", "--out", str(out)])
    records = read_jsonl(out / "metrics.jsonl")
    assert all("speed_acc" in r and "order_acc" in r and "acc" not in r for r in records)  # no unnamed duplicate of one of them
    assert {"final_speed_acc", "final_order_acc"} <= set(summary) and "final_acc" not in summary
    assert [key for _, key, _ in dict(curve_lines(records))["accuracy"]] == ["speed_acc", "order_acc"]
    assert (out / "curves.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())["final_speed_acc"] == pytest.approx(summary["final_speed_acc"])
