"""``pipeline/reference/decode.py``: PyAV decoding of a sample's frames, seeking past what it does not need."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import list_shards
from pipeline_helpers import build_numbered_shards, frame_numbers


@pytest.fixture(scope="module")
def long_record(tmp_path_factory):
    """One 1,200-frame frame-numbered video (about 160 KB as VP9, GOP 16) in a shard."""
    from pipeline.io.shard_reader import scan_shards

    out = build_numbered_shards(tmp_path_factory.mktemp("long_video"), videos={"long": ("walk", 1200)})
    (record,), _ = scan_shards(list_shards(out))
    return record


@pytest.mark.parametrize("gop", [16, 1, 1000, None], ids=["stored", "too-small", "too-large", "unknown"])
def test_reference_decode_reads_only_the_packets_it_needs(long_record, gop):
    """Frames far apart in a long video come back exactly (frame numbers), whatever the GOP hint that
    decides when to seek, and reading them touches a fraction of the file (the seeks skip the rest)."""
    from pipeline.reference.decode import pyav_union_decode

    record, size = long_record, long_record.members[long_record.video_ext][1]
    wanted = [3, 4, 5, 600, 601, 1150, 1199]
    with record.open_video() as video:
        frames = [frame for _, frame in pyav_union_decode(video, wanted, gop=gop)]
        assert list(frame_numbers(np.stack(frames))) == wanted
        if gop != 1000:  # a too-large hint decodes on where a seek would have paid: slower, still exact
            assert video.bytes_read < 0.5 * size, (video.bytes_read, size)
    with record.open_video() as video:  # one frame near the start: the rest of the file is never read
        (frame,) = [f for _, f in pyav_union_decode(video, [2], gop=gop)]
        assert frame_numbers(frame[None])[0] == 2 and video.bytes_read < 0.3 * size, (video.bytes_read, size)
