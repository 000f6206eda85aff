"""``python -m bench loader`` on inputs that used to end it: shards at a URL (it measured, then crashed on
``Path(url).stat()``), ``--per-speed`` with a speed no video is long enough for (it threw away every
measurement already made), and a shard folder that does not exist (a traceback, here and in loader-thread)."""

from __future__ import annotations

import pytest
from remote_helpers import NGINX, Nginx

from bench import loader as bench
from pipeline import LoaderConfig, list_shards

CFG = LoaderConfig(num_frames=8, speeds=(1, 2, 32), num_clips=2, batch_size=2, resize=64, crop_size=64)


@pytest.fixture()
def out_dir(shard_dir):
    return shard_dir  # the default frame-numbered set (tests/conftest.py); nothing here writes into it


@pytest.fixture()
def quick(monkeypatch):
    monkeypatch.setattr(bench, "LIMIT_SECONDS", 0.05)  # the decode limit's passes: one or two here


@pytest.mark.slow
def test_per_speed_keeps_the_speeds_that_ran_and_says_which_did_not(out_dir, quick):
    """Speed 32 spans 225 frames at T=8; the longest test video has 160."""
    result = bench.run_all(list_shards(out_dir), CFG, samples=4, workers=1, per_speed=True, repeats=1)
    assert set(result["per_speed"]) == {"1", "2"}
    assert result["per_speed"]["1"]["clips_per_s"]["reference"] > 0
    assert set(result["per_speed_not_run"]) == {"32"} and "no loader ran" in result["per_speed_not_run"]["32"]
    assert "speed 32, 1 clip: not measured: no loader ran" in bench.table(result)


def test_a_setting_no_loader_can_run_is_one_line_and_status_2(out_dir, quick, capsys):
    status = bench.main([str(out_dir), "--num-frames", "8", "--speeds", "32", "--num-clips", "1", "--samples", "4", "--repeats", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err[-1].startswith("python -m bench loader: error: no loader ran")



@pytest.mark.parametrize("name", ["loader", "loader-thread"])
def test_a_missing_shard_folder_is_one_line_and_status_2(tmp_path, capsys, name):
    from bench.__main__ import main

    missing = tmp_path / "nowhere"
    assert main([name, str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m bench {name}: error: shard not found: {missing}"]

@pytest.mark.slow
@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (`make setup` installs it with apt-get)")
def test_shards_at_a_url_are_measured_and_reported(out_dir, quick, tmp_path):
    server = Nginx(out_dir, tmp_path / "nginx")
    try:
        urls = list_shards(server.url)
        result = bench.run_all(urls, CFG, samples=4, workers=1, per_speed=False, repeats=1)
    finally:
        server.stop()
    assert result["clips_per_s"]["reference"] > 0
    assert result["config"]["video_bytes"] is None and result["config"]["shards"] == len(urls)
    assert bench._tar_bytes(list_shards(out_dir)) > 0
