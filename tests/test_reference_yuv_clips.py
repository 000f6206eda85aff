"""``pipeline/reference/yuv_clips.py``: crops cut in YUV and converted once per sample, bit-identical to
converting whole frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.views import View, assemble_clips


def _random_yuv_frame(rng, width: int, height: int, colorspace: int):
    import av

    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8)[: plane.line_size * plane.height].reshape(plane.height, plane.line_size)
        rows[:] = rng.integers(0, 256, rows.shape, dtype=np.uint8)
    frame.colorspace = colorspace
    return frame


@pytest.mark.parametrize("size", [9, 10, 16])
@pytest.mark.parametrize("colorspace", [1, 5], ids=["bt709", "bt601"])
@pytest.mark.parametrize("layout", ["channels_last", "ring_slot"])
def test_yuv_clip_writer_is_bit_identical_to_converting_whole_frames(size, colorspace, layout):
    """Crops cut in YUV (even-aligned boxes), converted in one tall planar-RGB frame per sample == whole
    frames converted to packed RGB and cut by ``assemble_clips``: odd and even offsets, crops on every
    edge, flips, repeated frames; boxes of 10, 12 and 18 pixels (the tall frame is widened to 16 or 32);
    into a new tensor or a channel-first ring slot. A second sample of the same shape (it reuses the
    first's tall frame) is exact too."""
    from pipeline.reference.decode import rgb_view
    from pipeline.reference.yuv_clips import YuvClipWriter

    rng = np.random.default_rng(size)
    height, width = 20, 22
    positions = np.array([[0, 0, 6, 3], [1, 2, 3, 4], [6, 5, 4, 3], [2, 2, 2, 2], [5, 0, 1, 6]])
    for _ in range(2):
        frames = [_random_yuv_frame(rng, width, height, colorspace) for _ in range(7)]
        views = [View((height, width), 0, 0, size, False), View((height, width), height - size, width - size, size, True),
                 View((height, width), 3, 5, size, True), View((height, width), 2, 4, size, False),
                 View((height, width), 1, width - size, size, bool(rng.integers(2)))]
        out = None
        if layout == "ring_slot":  # what OutputRing.take hands out: (K, T, S, S, 3) over (K, 3, T, S, S) memory
            out = torch.zeros((len(views), 3, positions.shape[1], size, size), dtype=torch.uint8).movedim(1, -1)
        assert YuvClipWriter.accepts(frames[0], views)
        writer = YuvClipWriter(positions, views, frames[0], out=out)
        for u, frame in enumerate(frames):
            writer.put(u, frame)
        assert writer.missing() == []
        whole = torch.from_numpy(np.stack([rgb_view(f).copy() for f in frames]))
        clips = writer.finish()
        assert out is None or clips.data_ptr() == out.data_ptr()
        assert torch.equal(clips, assemble_clips(whole, positions, views))
    with pytest.raises(ValueError, match="expected yuv420p"):
        writer.put(0, frames[0].reformat(format="yuv444p"))


def test_yuv_clip_writer_declines_what_it_cannot_cut():
    import av

    from pipeline.reference.yuv_clips import YuvClipWriter

    views = [View((16, 22), 0, 0, 14, False)]
    assert YuvClipWriter.accepts(av.VideoFrame(22, 16, "yuv420p"), views)
    assert not YuvClipWriter.accepts(av.VideoFrame(22, 16, "yuvj422p"), views)  # e.g. MJPEG: other chroma layout
    assert not YuvClipWriter.accepts(av.VideoFrame(22, 16, "yuv420p"), [View((16, 22), 0, 0, 16, False)])  # no room for the box
    assert not YuvClipWriter.accepts(av.VideoFrame(24, 16, "yuv420p"), views)  # frames of another size than the views'
