"""The GPU path's logic, checked on CPU: codec routing away from DALI's ``mixed`` decoder, decoder options and
thread counts, bounded decode work (stream cutting, measured on DALI's CPU decoder), the background batch
thread, ``--deterministic`` on GPU and the channels-last default for TGN. What needs a GPU itself is in
``docker/gpu_check.sh``."""

from __future__ import annotations

import io
import itertools
import threading

import av
import numpy as np
import pytest
import torch

from pipeline import LoaderConfig, build_loader, list_shards
from pipeline.routing import DALI_CPU_CODECS, GPU_DECODE_THREADS, MIXED_CODECS, choose_backend, dali_threads
from pipeline.io.shard_reader import scan_shards
from pipeline.dali.stream_cut import _runs, cut_stream
from pipeline_helpers import build_numbered_shards, frame_numbers
from synthetic.videos import read_frame_index

LONG = {"long": ("walk", 300), "mid": ("run", 140), "short": ("walk", 60), "other": ("run", 96)}
RAW = dict(num_frames=8, speeds=(-4, -2, -1, 1, 2, 4), num_clips=3, batch_size=2, resize=64, crop_size=64, augment=False)


@pytest.fixture(scope="module")
def vp9_long(tmp_path_factory):
    return list_shards(build_numbered_shards(tmp_path_factory.mktemp("vp9_long"), videos=LONG, gop=16))


@pytest.fixture(scope="module")
def mjpeg(tmp_path_factory):
    return list_shards(build_numbered_shards(tmp_path_factory.mktemp("mjpeg"), codec="mjpeg", videos=dict(itertools.islice(LONG.items(), 1, 4))))


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    return list_shards(build_numbered_shards(tmp_path_factory.mktemp("h264"), codec="h264", videos={"mid": ("run", 140)}))


# ---------------------------------------------------------------- routing (finding 2)
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
    loader = build_loader(mjpeg, LoaderConfig(**RAW), backend=backend, num_workers=0, normalized=False)
    assert loader.backend == {"auto": "reference", "dali": "dali-cpu"}[backend]
    assert "mjpeg" in loader.route_reason
    batches = list(loader)
    assert len(batches) == len(loader) == 1
    np.testing.assert_array_equal(frame_numbers(batches[0]["clips"].numpy()), batches[0]["frame_indices"].numpy())


# ---------------------------------------------------------------- decoder options, threads (findings 4, 5)
def test_decoder_options_are_dali_arguments_that_change_its_defaults():
    import nvidia.dali.backend as dali_backend

    from pipeline.dali.stream import decoder_options

    schema = dali_backend.GetSchema("decoders__Video")
    mixed = decoder_options(mixed=True)
    assert mixed == {"device": "mixed", "pad_mode": "none", "affine": False}
    assert all(schema.HasArgument(name) for name in mixed if name != "device")
    # both defaults are what the options exist to change: pinned threads, black-frame padding
    assert schema.GetArgumentDefaultValueString("affine") == "True"
    assert schema.GetArgumentDefaultValueString("pad_mode") == "'constant'"
    assert "affine" not in decoder_options(mixed=False)


def test_frame_past_the_end_is_an_error_not_a_black_frame(vp9_long):
    from pipeline.dali.stream import build_decode_pipeline

    record = scan_shards(vp9_long)[0][0]
    pipe = build_decode_pipeline(batch_size=1, num_threads=1, device_id=None)
    assert pipe.num_threads == 1
    pipe.feed_input("encoded", [np.frombuffer(record.read_video(), np.uint8)])
    pipe.feed_input("frame_indices", [np.array([record.video_frames - 1, record.video_frames], np.int32)])
    pipe.schedule_run()
    with pytest.raises(RuntimeError):
        pipe.outputs()


def test_thread_counts():
    assert dali_threads("dali-gpu", num_workers=2) == GPU_DECODE_THREADS >= 8
    assert dali_threads("dali-gpu", num_workers=2, gpu_decode_threads=16) == 16
    assert dali_threads("dali-cpu", num_workers=3) == 3 and dali_threads("dali-cpu", num_workers=0) == 1
    with pytest.raises(ValueError, match="gpu_decode_threads"):
        dali_threads("dali-gpu", num_workers=2, gpu_decode_threads=0)


# ---------------------------------------------------------------- bounded decode work (finding 3)
def _decode_all(data: np.ndarray) -> list[int]:
    with av.open(io.BytesIO(data.tobytes())) as container:
        return [read_frame_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


@pytest.mark.parametrize("wanted", [[0, 1, 2], [50, 58, 66, 120], [30, 31, 99, 250, 299], [299]])
def test_cut_stream_holds_exactly_the_runs_and_every_wanted_frame(vp9_long, wanted):
    record = next(r for r in scan_shards(vp9_long)[0] if r.video_frames == 300)
    data = record.read_video()
    cut = cut_stream(record, data, wanted)
    keyframes = np.arange(0, 300, 16)  # preprocess's closed GOP of 16
    runs = _runs(np.array(wanted), keyframes)
    assert cut.source_frames.tolist() == [f for a, b in runs for f in range(a, b + 1)]
    assert _decode_all(cut.data) == cut.source_frames.tolist()  # the cut stream decodes alone, frame-exact
    assert cut.source_frames[cut.frame_indices].tolist() == wanted
    assert cut.decoded == len(cut.source_frames) <= wanted[-1] + 1


def test_cut_stream_with_reordered_frames_h264(h264):
    """H.264 with B-frames: one cut from the keyframe before the first wanted frame to the end of the GOP of
    the last, timestamps shifted together (checked with PyAV: DALI's CPU decoder has no H.264)."""
    record = scan_shards(h264)[0][0]
    cut = cut_stream(record, record.read_video(), [40, 41, 70])
    assert cut.source_frames.tolist() == list(range(32, 80))
    assert _decode_all(cut.data) == list(range(32, 80))
    assert cut.source_frames[cut.frame_indices].tolist() == [40, 41, 70]


def test_dali_decode_work_is_bounded_and_frames_exact(vp9_long):
    """DALI's CPU decoder (no seeking, like ``mixed``) decodes what the reference backend's seeking decoder
    decodes, far less than the whole prefix it decoded before cutting, and returns the right frames."""
    cfg = LoaderConfig(**{**RAW, "speeds": (-8, -4, -2, -1, 1, 2, 4, 8), "num_clips": 2})
    loader = build_loader(vp9_long, cfg, backend="dali", num_workers=1, normalized=False)
    records = {r.key: r for r in scan_shards(vp9_long)[0]}
    seeking = prefix = clips = 0
    for epoch in range(4):
        loader.set_epoch(epoch)
        for batch in loader:
            np.testing.assert_array_equal(frame_numbers(batch["clips"].numpy()), batch["frame_indices"].numpy())
            for key, frames in zip(batch["key"], batch["frame_indices"].numpy()):
                union = np.unique(frames)
                seeking += sum(b - a + 1 for a, b in _runs(union, np.arange(0, records[key].video_frames, 16)))
                prefix += int(union[-1]) + 1
                clips += len(frames)
    assert loader.decoded_frames_per_clip == pytest.approx(seeking / clips)
    assert loader.decoded_frames_per_clip < 0.75 * prefix / clips


# ---------------------------------------------------------------- background batches (finding 6)
def test_background_batches_keep_order_raise_and_stop():
    from pipeline.dali.background import background_batches

    assert [b["i"] for b in background_batches(lambda: ({"i": i} for i in range(7)))] == list(range(7))

    def broken():
        yield {"i": 0}
        raise ValueError("shard x.tar key k: bad")

    got = []
    with pytest.raises(ValueError, match="shard x.tar"):
        for b in background_batches(broken):
            got.append(b["i"])
    assert got == [0]

    closed = threading.Event()

    def endless():
        try:
            for i in itertools.count():
                yield {"i": i}
        finally:
            closed.set()

    stream = background_batches(endless, depth=2)
    assert [next(stream)["i"] for _ in range(3)] == [0, 1, 2]
    stream.close()  # the consumer stops early (resume skip, end of training)
    assert closed.is_set()  # the producer was closed and joined, not left running
    assert not any(t.name == "loader-batches" for t in threading.enumerate())


# ---------------------------------------------------------------- deterministic and TGN layout (findings 7, 8)
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


# ---------------------------------------------------------------- the prepared GPU check
def test_gpu_check_compiles_and_its_imports_resolve():
    """docker/gpu_check.py cannot run here (no GPU); it must at least compile and import, and the shell
    script must run it (as a file: spawned preprocess workers re-import the main module by path)."""
    import ast
    import importlib
    from pathlib import Path

    docker = Path(__file__).resolve().parent.parent / "docker"
    assert "docker/gpu_check.py" in (docker / "gpu_check.sh").read_text()
    tree = ast.parse((docker / "gpu_check.py").read_text())
    assert any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"gpu_check.py imports {missing} from {node.module}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                importlib.import_module(a.name)


def test_step_metrics_one_flush_per_window_keeps_every_step():
    from training.distributed import DistInfo
    from training.step_metrics import StepMetrics

    metrics = StepMetrics(DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    losses = [2.5, 2.25, 2.0]
    for i, loss in enumerate(losses):
        metrics.add(step=i + 1, epoch=0, lr=0.1, clips=8, wait_s=0.0, values={"loss": torch.tensor(loss), "acc": torch.tensor(float("nan")),
                                                                            "grad_norm": torch.tensor(1.5)})
    records = metrics.flush()
    assert [r["step"] for r in records] == [1, 2, 3] and [r["loss"] for r in records] == losses
    assert all(np.isnan(r["acc"]) and r["grad_norm"] == 1.5 and r["clips_per_s"] > 0 and 0 <= r["data_wait_pct"] <= 100 for r in records)
    assert metrics.flush() == []  # the window was emptied


@pytest.mark.slow
def test_bench_reports_decoded_frames_per_clip_by_method(vp9_long, monkeypatch):
    from bench import loader as bench

    monkeypatch.setattr(bench, "LIMIT_SECONDS", 0.05)
    cfg = LoaderConfig(**{**RAW, "speeds": (-4, -2, -1, 1, 2, 4), "num_clips": 2})
    by = bench.run_once(vp9_long, cfg, samples=4, workers=1, repeats=1)["decoded_frames_per_clip_by_method"]
    assert set(by) == {"dali", "dali_uncut", "reference", "pyav_per_clip", "decode_limit"}
    assert by["dali"] is not None and by["dali"] < by["dali_uncut"]  # the cut bounds DALI's work (measured by the loader)
    assert cfg.num_frames <= by["reference"] <= by["decode_limit"] <= by["pyav_per_clip"]
