"""``bench/loader.py`` (``python -m bench loader``): every method measured side by side with the decode
limit, a method that cannot run recorded with its reason, and decoded frames per clip by method."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import LoaderConfig
from pipeline_helpers import LONG_RAW


@pytest.mark.slow
def test_bench_measures_every_method(shards, monkeypatch):
    from bench import loader as bench

    monkeypatch.setattr(bench, "LIMIT_SECONDS", 0.05)  # the decode limit's passes: one or two here
    cfg = LoaderConfig(num_frames=8, speeds=(-2, -1, 1, 2), num_clips=2, batch_size=2, resize=64, crop_size=64)
    result = bench.run_all(shards, cfg, samples=4, workers=1, per_speed=False, repeats=2)
    assert result["default"] == "reference"
    assert set(result["clips_per_s"]) == {"dali", "reference", "pyav_per_clip", "torchcodec_per_clip", "decord_per_clip"}
    assert all(v is not None and v > 0 for v in result["clips_per_s"].values()), result["detail"]["errors"]
    assert result["detail"]["decoded_frames_per_clip"] >= 8  # at least the clip's span, plus GOP lead-in
    assert result["decode_limit_clips_per_s"] > 0 and result["config"]["workers"] == 1
    rounds = result["detail"]["rounds"]
    assert len(rounds) == result["config"]["repeats"] == 2
    assert all(set(r["decode_limit_after"]) == set(result["clips_per_s"]) for r in rounds)  # a limit after every method
    ratios = [r["clips_per_s"]["reference"] / r["decode_limit_after"]["reference"] for r in rounds]
    assert result["default_vs_decode_limit"] == pytest.approx(np.median(ratios), abs=2e-3)  # side-by-side ratios, median
    assert "decode_limit" in bench.table(result) and "medians of 2 rounds" in bench.table(result)
    with pytest.raises(ValueError, match="repeats"):
        bench.run_once(shards, cfg, samples=4, workers=1, repeats=0)


def test_bench_records_a_method_that_cannot_run_with_its_reason(shards, monkeypatch):
    from bench import loader as bench

    real_time_loader = bench._time_loader

    def no_dali(shards, cfg, backend, samples, workers, remote=None):
        if backend == "dali":
            raise RuntimeError("no DALI here")
        return real_time_loader(shards, cfg, backend, samples, workers, remote)

    def broken_peer(data, indices):
        raise OSError("decoder missing")

    monkeypatch.setattr(bench, "_time_loader", no_dali)
    monkeypatch.setattr(bench, "LIMIT_SECONDS", 0.05)
    monkeypatch.setitem(bench.PEERS, "decord_per_clip", broken_peer)
    cfg = LoaderConfig(num_frames=8, speeds=(-2, -1, 1, 2), num_clips=2, batch_size=2, resize=64, crop_size=64)
    result = bench.run_all(shards, cfg, samples=4, workers=0, per_speed=False, repeats=2)
    assert result["clips_per_s"]["dali"] is None and result["clips_per_s"]["decord_per_clip"] is None
    assert result["not_run"] == {"dali": "RuntimeError: no DALI here", "decord_per_clip": "OSError: decoder missing"}
    assert result["clips_per_s"]["reference"] > 0 and result["clips_per_s"]["pyav_per_clip"] > 0
    assert "dali did not run: RuntimeError: no DALI here" in bench.table(result)
    assert result["detail"]["vs_decode_limit"]["dali"] is None  # no rate, no ratio, no limit measured after it
    assert all(set(r["decode_limit_after"]) == {"reference", "pyav_per_clip", "torchcodec_per_clip"} for r in result["detail"]["rounds"])
    with pytest.raises(RuntimeError, match="no decodable frame"):
        bench._decode_rate([])


@pytest.mark.slow
def test_bench_reports_decoded_frames_per_clip_by_method(vp9_long, monkeypatch):
    from bench import loader as bench

    monkeypatch.setattr(bench, "LIMIT_SECONDS", 0.05)
    cfg = LoaderConfig(**{**LONG_RAW, "speeds": (-4, -2, -1, 1, 2, 4), "num_clips": 2})
    by = bench.run_once(vp9_long, cfg, samples=4, workers=1, repeats=1)["decoded_frames_per_clip_by_method"]
    assert set(by) == {"dali", "dali_uncut", "reference", "pyav_per_clip", "decode_limit"}
    assert by["dali"] is not None and by["dali"] < by["dali_uncut"]  # the cut bounds DALI's work (measured by the loader)
    assert cfg.num_frames <= by["reference"] <= by["decode_limit"] <= by["pyav_per_clip"]
