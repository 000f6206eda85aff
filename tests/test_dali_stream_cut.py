"""``pipeline/dali/stream_cut.py``: bounded decode work for DALI's decoders (which cannot seek): the stream
cut to the GOPs a sample's frames need decodes alone and frame-exact, and the loader's decoded frames per
clip are what a seeking decoder decodes (measured on DALI's CPU decoder)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from pipeline import LoaderConfig, build_loader, list_shards
from pipeline.dali.stream_cut import _runs, cut_stream
from pipeline.io.shard_reader import scan_shards
from pipeline_helpers import LONG_RAW, build_numbered_shards, frame_numbers
from synthetic.videos import read_frame_index


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    return list_shards(build_numbered_shards(tmp_path_factory.mktemp("h264"), codec="h264", videos={"mid": ("run", 140)}))


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
    cfg = LoaderConfig(**{**LONG_RAW, "speeds": (-8, -4, -2, -1, 1, 2, 4, 8), "num_clips": 2})
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
