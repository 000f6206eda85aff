"""Cut clips out of decoded YUV 4:2:0 frames and convert only the crops to RGB, in one call per clip.

Converting every wanted frame to RGB costs more than the crops need (a 112x112 crop keeps 43% of a
228x128 frame) and PyAV's per-call overhead is paid once per frame. Here each clip slot's crop is copied,
still in YUV, into one tall frame per clip (slot ``t`` at rows ``t*B``), and libswscale converts that
frame in one call. The crop box is widened to even offsets and an even size ``B`` so that every 2x2 block
keeps its chroma sample: the unscaled 4:2:0 -> RGB conversion treats blocks independently, so the result
is bit-identical to converting whole frames and cropping (``tests/test_pipeline.py`` checks it).

Used by the reference backend when the stored frames need no resize (see ``reference.py``); frames in any
other pixel format, or too small for the widened box, go through :class:`augment.ClipWriter` instead.
"""

from __future__ import annotations

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from pipeline.augment import View, clip_buffer, copy_clip, slots_by_frame

#: The pixel format this path handles (VP9/H.264 shards decode to it).
FORMAT = "yuv420p"

# One converter per process: its swscale context is reused while the tall frames keep their size.
_CONVERTER = VideoReformatter()


def _plane_rows(plane) -> np.ndarray:
    """A frame plane as a (height, line_size) uint8 array over the frame's own buffer (no copy)."""
    return np.frombuffer(plane, np.uint8)[: plane.line_size * plane.height].reshape(plane.height, plane.line_size)


def box_size(size: int) -> int:
    """Side of the even-aligned box that holds a ``size`` crop at any offset: the next even number > size."""
    return size + 2 - size % 2


def box_origin(offset: int, extent: int, box: int) -> int:
    """Even start of the box holding ``[offset, offset + size)`` inside ``[0, extent)`` (``extent`` even)."""
    return min(offset & ~1, (extent - box) & ~1)


class YuvClipWriter:
    """Same contract as :class:`augment.ClipWriter` (``put``, ``missing``, ``clips``), but ``put`` takes
    the decoded ``av.VideoFrame`` (yuv420p) and the RGB conversion happens in :meth:`finish`."""

    @staticmethod
    def accepts(frame: av.VideoFrame, views: list[View]) -> bool:
        """Whether frames like ``frame`` can be cut here for ``views`` (format, even size, room for the box)."""
        height, width = frame.height, frame.width
        box = box_size(views[0].size)
        return (frame.format.name == FORMAT and height % 2 == 0 and width % 2 == 0 and height >= box and width >= box
                and all(v.resize_hw == (height, width) for v in views))

    def __init__(self, positions: np.ndarray, views: list[View], first: av.VideoFrame, *, out: torch.Tensor | None = None):
        k, t = np.shape(positions)
        size = views[0].size
        self.clips = clip_buffer(positions, size, out)
        self.height, self.width = first.height, first.width
        self.views, self.size, self.box = views, size, box_size(size)
        # the tall frames carry the source's colour description, which the conversion follows
        self._colorspace, self._color_range = first.colorspace, first.color_range
        self._tall = [av.VideoFrame(self.box, self.box * t, FORMAT) for _ in range(k)]
        self._tall_planes = [[_plane_rows(p) for p in frame.planes] for frame in self._tall]
        self._origins = [(box_origin(v.top, self.height, self.box), box_origin(v.left, self.width, self.box)) for v in views]
        self._uses = slots_by_frame(positions)
        self._pending = set(self._uses)

    def put(self, position: int, frame: av.VideoFrame) -> None:
        """Frame ``position`` of the union: copy its crop boxes (Y, U, V) into the clips' tall frames."""
        if (frame.format.name, frame.height, frame.width) != (FORMAT, self.height, self.width):
            raise ValueError(f"frame {frame.format.name} {frame.width}x{frame.height}, expected {FORMAT} {self.width}x{self.height}")
        luma, cb, cr = (_plane_rows(p) for p in frame.planes)
        b, half = self.box, self.box // 2
        for k, t in self._uses.get(position, ()):
            top, left = self._origins[k]
            tall_luma, tall_cb, tall_cr = self._tall_planes[k]
            tall_luma[t * b : (t + 1) * b, :b] = luma[top : top + b, left : left + b]
            slot, rows, columns = slice(t * half, (t + 1) * half), slice(top // 2, top // 2 + half), slice(left // 2, left // 2 + half)
            tall_cb[slot, :half] = cb[rows, columns]
            tall_cr[slot, :half] = cr[rows, columns]
        self._pending.discard(position)

    def missing(self) -> list[int]:
        """Union positions that clips use but :meth:`put` has not received."""
        return sorted(self._pending)

    def finish(self) -> torch.Tensor:
        """Convert each clip's tall frame to RGB and cut, crop and flip it into ``clips``."""
        b, size = self.box, self.size
        for k, (tall, view, (top, left)) in enumerate(zip(self._tall, self.views, self._origins)):
            tall.colorspace, tall.color_range = self._colorspace, self._color_range
            rgb = _CONVERTER.reformat(tall, format="rgb24")
            rows = _plane_rows(rgb.planes[0])[:, : b * 3].reshape(-1, b, b, 3)  # (T, B, B, 3)
            dy, dx = view.top - top, view.left - left
            crops = rows[:, dy : dy + size, dx : dx + size]
            copy_clip(self.clips[k], crops, view.flip)
        return self.clips
