"""train.py's device settings, checked on CPU: ``--deterministic`` is warn-only on a GPU, channels-last is
off for TGN."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize(("device", "warn_only"), [("cpu", False), ("cuda", True)])
def test_deterministic_is_warn_only_on_gpu(device, warn_only):
    import train

    try:
        train.use_deterministic_algorithms(torch.device(device))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled() is warn_only
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize(("norm", "flag", "expected"), [("bn", True, True), ("tgn", True, False), ("bn", False, False)])
def test_channels_last_is_off_for_tgn(norm, flag, expected):
    import train
    from training.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    cfg = TrainConfig(data=DataConfig(data="x"), model=ModelConfig(norm=norm), run=RunConfig(channels_last=flag))
    assert train.use_channels_last(cfg, torch.device("cuda")) is expected
    assert train.use_channels_last(cfg, torch.device("cpu")) is False
