"""``bench/profile_loader.py`` (``python -m bench profile-loader``)."""

from __future__ import annotations

import pytest

from pipeline import LoaderConfig


def test_profile_loader_reports_the_worker_and_training_process_costs(shards):
    """``bench.profile_loader``: the worker's ``load_sample`` profile (shares of every group sum to 1) and
    the costs per sample of a real loader run, the worker processes' CPU found through their pids."""
    import platform

    from pipeline.io.shard_reader import scan_shards
    from bench.profile_loader import training_process_costs, worker_profile

    cfg = LoaderConfig(num_frames=8, speeds=(-2, -1, 1, 2), num_clips=2, batch_size=2, resize=64, crop_size=64)
    costs = training_process_costs(shards, cfg, workers=1, epochs=2)
    assert set(costs) == {"receive_ms_per_sample", "collate_ms_per_sample", "workers_cpu_ms_per_sample", "wall_ms_per_sample"}
    assert costs["wall_ms_per_sample"] > 0 and costs["receive_ms_per_sample"] >= 0 and costs["collate_ms_per_sample"] > 0
    if platform.system() == "Linux":  # read from /proc (clock ticks: a short run may count 0)
        assert costs["workers_cpu_ms_per_sample"] is not None and costs["workers_cpu_ms_per_sample"] >= 0
    profile = worker_profile(scan_shards(shards)[0][:4], cfg, epochs=1)
    assert profile["ms_per_sample"] > 0 and sum(profile["shares"].values()) == pytest.approx(1, abs=0.01)
