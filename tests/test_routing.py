"""``pipeline/routing.py``: codec routing away from DALI's ``mixed`` decoder (checked on CPU with CUDA
reported available) and DALI's thread counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pipeline import LoaderConfig, build_loader, list_shards
from pipeline.routing import DALI_CPU_CODECS, GPU_DECODE_THREADS, MIXED_CODECS, choose_backend, dali_threads
from pipeline_helpers import LONG_RAW, LONG_VIDEOS, build_numbered_shards, frame_numbers


@pytest.fixture(scope="module")
def mjpeg(tmp_path_factory):
    return list_shards(build_numbered_shards(tmp_path_factory.mktemp("mjpeg"), codec="mjpeg", videos=dict(itertools.islice(LONG_VIDEOS.items(), 1, 4))))


@pytest.mark.parametrize(("requested", "codecs", "cuda", "backend"), [
    ("auto", {"vp9"}, True, "dali-gpu"),
    ("auto", {"h264", "vp9"}, True, "dali-gpu"),
    ("auto", {"mjpeg"}, True, "reference"),
    ("auto", {"mjpeg", "vp9"}, True, "reference"),
    ("dali", {"mjpeg"}, True, "dali-cpu"),
    ("dali", {"mjpeg", "vp9"}, True, "dali-cpu"),
    ("dali", {"mjpeg", "h264"}, True, "reference"),  # neither DALI decoder takes both
    ("auto", {"mjpeg"}, False, "reference"),
    ("dali", {"h264"}, False, "dali-cpu"),  # no GPU: DALI's CPU decoder, per-sample named errors
    ("reference", {"vp9"}, True, "reference"),
])
def test_route(requested, codecs, cuda, backend):
    route = choose_backend(requested, codecs, cuda=cuda)
    assert route.backend == backend
    if cuda and requested != "reference" and not codecs <= MIXED_CODECS:
        assert "mjpeg" in route.reason and "mixed" in route.reason


def test_codec_sets_match_dali_2_4():
    assert "mjpeg" not in MIXED_CODECS and {"h264", "hevc", "vp9", "av1"} <= MIXED_CODECS
    assert "h264" not in DALI_CPU_CODECS and {"vp9", "mjpeg"} <= DALI_CPU_CODECS


@pytest.mark.parametrize("backend", ["auto", "dali"])
def test_mjpeg_shards_on_a_gpu_machine_run_on_a_host_path(mjpeg, monkeypatch, backend):
    """With CUDA reported available, MJPEG shards never reach the mixed decoder; the loader says which path ran
    and its batches are frame-exact."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loader = build_loader(mjpeg, LoaderConfig(**LONG_RAW), backend=backend, num_workers=0, normalized=False)
    assert loader.backend == {"auto": "reference", "dali": "dali-cpu"}[backend]
    assert "mjpeg" in loader.route_reason
    batches = list(loader)
    assert len(batches) == len(loader) == 1
    np.testing.assert_array_equal(frame_numbers(batches[0]["clips"].numpy()), batches[0]["frame_indices"].numpy())


def test_thread_counts():
    assert GPU_DECODE_THREADS == 0  # the default: derived from the GPU's NVDEC engines
    assert dali_threads("dali-gpu", num_workers=2, nvdec_engines=7, cpus=16) == 14
    assert dali_threads("dali-gpu", num_workers=2, gpu_decode_threads=16) == 16
    assert dali_threads("dali-cpu", num_workers=3) == 3 and dali_threads("dali-cpu", num_workers=0) == 1
    with pytest.raises(ValueError, match="gpu_decode_threads"):
        dali_threads("dali-gpu", num_workers=2, gpu_decode_threads=-1)
    with pytest.raises(ValueError, match="NVDEC engine count"):
        dali_threads("dali-gpu", num_workers=2)
