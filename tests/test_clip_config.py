"""One definition of clip settings: pipeline.ClipConfig, extended by LoaderConfig and train.py's DataConfig."""

from __future__ import annotations

import dataclasses

import pytest

import train
from pipeline import DEFAULT_SPEEDS, ClipConfig, LoaderConfig
from training.config import DataConfig, ModelConfig, TrainConfig, parse_overrides, resolve

CLIP_FIELDS = [f.name for f in dataclasses.fields(ClipConfig)]


def test_both_configs_extend_the_clip_settings_with_their_defaults():
    for config in (LoaderConfig(), DataConfig(data="x")):
        assert isinstance(config, ClipConfig)
        assert config.clip_settings() == ClipConfig().clip_settings()
    assert ClipConfig().speeds == DEFAULT_SPEEDS == (-8, -4, -2, -1, 1, 2, 4, 8)


@pytest.mark.parametrize("bad", [
    {"num_frames": 0}, {"speeds": ()}, {"speeds": (0, 1)}, {"speeds": (1, 1, 2)},
    {"num_clips": 0}, {"num_clips": 5, "speeds": (1, 2, 3, 4)}, {"num_clips": 7},
    {"num_eval_clips": 0}, {"crop_size": 129}, {"crop_size": 0},
])
def test_one_set_of_checks(bad):
    messages = []
    for make in (ClipConfig, LoaderConfig, lambda **kw: DataConfig(data="x", **kw)):
        with pytest.raises(ValueError) as info:
            make(**bad)
        messages.append(str(info.value))
    assert len(set(messages)) == 1, messages


def test_train_py_hands_every_clip_setting_to_the_loader():
    mode, overrides = parse_overrides(["pretrain", "--data", "x", "--num-frames", "8", "--speeds=-2,1,2", "--num-clips", "3",
                                       "--num-eval-clips", "5", "--resize", "64", "--crop-size", "48"])
    cfg = resolve(mode, overrides)
    loader = train.loader_config(cfg, "pretrain", training=True)
    assert loader.clip_settings() == cfg.data.clip_settings() == {
        "num_frames": 8, "speeds": (-2, 1, 2), "num_clips": 3, "num_eval_clips": 5, "resize": 64, "crop_size": 48}


def test_sorting_needs_two_clips_but_a_speed_head_does_not():
    with pytest.raises(ValueError, match="num-clips >= 2"):
        TrainConfig(mode="pretrain", data=DataConfig(data="x", num_clips=1))
    TrainConfig(mode="pretrain", data=DataConfig(data="x", num_clips=1), model=ModelConfig(head="speed"))
