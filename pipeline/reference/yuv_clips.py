"""Cut clips out of decoded YUV 4:2:0 frames and convert only the crops to RGB, in one call per sample.

Converting every wanted frame to RGB costs more than the crops need (a 112x112 crop keeps 43% of a
228x128 frame) and PyAV's per-call overhead is paid once per frame. Here each clip slot's crop is copied,
still in YUV, into one tall frame per sample (clip ``k``'s slot ``t`` at rows ``(k*T + t)*B``), and
libswscale converts that frame in one call. The crop box is widened to even offsets and an even size ``B``
so that every 2x2 block keeps its chroma sample: the unscaled 4:2:0 -> RGB conversion treats blocks
independently, so the result is bit-identical to converting whole frames and cropping
(``tests/test_reference_yuv_clips.py`` checks it).

The tall frame is converted to planar RGB (``gbrp``), not packed ``rgb24``: each channel then leaves as a
contiguous block, so the copy into a channel-first ring slot needs no deinterleaving (0.07 against
0.27 ms per 16 x 112 x 112 clip, one thread), and the conversion itself is faster (0.47 against 0.65 ms
for 64 slots of 114 x 114). libswscale's planar output is only right for frame widths that are a multiple
of 16 (with FFmpeg 8.1 the columns past the last multiple of 16 come out zero), so the tall frame is
widened to one; the extra columns are never read.

Used by the reference backend when the stored frames need no resize (see ``reference.py``); frames in any
other pixel format, or too small for the widened box, go through :class:`pipeline.views.ClipWriter` instead.
"""

from __future__ import annotations

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from pipeline.views import View, clip_buffer

#: The pixel format this path handles (VP9/H.264 shards decode to it).
FORMAT = "yuv420p"
#: The planar RGB format the tall frame is converted to, and which of its planes holds R, G and B.
PLANAR_RGB, RGB_PLANES = "gbrp", (2, 0, 1)
#: Widths of the tall frame are rounded up to a multiple of this (see the module docstring).
WIDTH_ALIGN = 16

# One converter per process: its swscale context is reused while the tall frames keep their size.
_CONVERTER = VideoReformatter()
# Tall frames no writer holds, by (width, height), with their rows per clip slot (see _tall_frame):
# allocating a new 1.4 MB frame per sample cost about 0.2 ms (page faults).
_SPARE: dict[tuple[int, int], tuple] = {}


def _plane_rows(plane, height: int | None = None) -> np.ndarray:
    """A frame plane as a (height, line_size) uint8 array over the frame's own buffer (no copy). ``height``:
    the plane's, when the caller knows it (one call into PyAV less, in the per-frame path)."""
    return np.ndarray((plane.height if height is None else height, plane.line_size), np.uint8, plane)


def box_size(size: int) -> int:
    """Side of the even-aligned box that holds a ``size`` crop at any offset: the next even number > size."""
    return size + 2 - size % 2


def box_origin(offset: int, extent: int, box: int) -> int:
    """Even start of the box holding ``[offset, offset + size)`` inside ``[0, extent)`` (``extent`` even)."""
    return min(offset & ~1, (extent - box) & ~1)


def _tall_frame(box: int, rows: int) -> tuple:
    """A yuv420p frame of ``rows`` slots of ``box`` x ``box`` stacked vertically, at least ``box`` wide (a
    multiple of ``WIDTH_ALIGN``), and each slot's (Y, U, V) box as array views into it; a spare one if
    there is one. Hand it back with ``_SPARE[frame.width, frame.height] = ...`` once converted."""
    width, height = -(-box // WIDTH_ALIGN) * WIDTH_ALIGN, box * rows
    spare = _SPARE.pop((width, height), None)
    if spare is not None:
        return spare
    frame = av.VideoFrame(width, height, FORMAT)
    luma, cb, cr = (_plane_rows(p) for p in frame.planes)
    half = box // 2
    slots = [(luma[r * box : (r + 1) * box, :box], cb[r * half : (r + 1) * half, :half], cr[r * half : (r + 1) * half, :half])
             for r in range(rows)]
    return frame, slots


class YuvClipWriter:
    """Same contract as :class:`pipeline.views.ClipWriter` (``put``, ``missing``, ``clips``), but ``put`` takes
    the decoded ``av.VideoFrame`` (yuv420p) and the RGB conversion happens in :meth:`finish`."""

    @staticmethod
    def accepts(frame: av.VideoFrame, views: list[View]) -> bool:
        """Whether frames like ``frame`` can be cut here for ``views`` (format, even size, room for the box)."""
        height, width = frame.height, frame.width
        box = box_size(views[0].size)
        return (frame.format.name == FORMAT and height % 2 == 0 and width % 2 == 0 and height >= box and width >= box
                and all(v.resize_hw == (height, width) for v in views))

    def __init__(self, positions: np.ndarray, views: list[View], first: av.VideoFrame, *, out: torch.Tensor | None = None):
        positions = np.asarray(positions)
        clips, slots = positions.shape
        size = views[0].size
        self.clips = clip_buffer(positions, size, out)
        self.height, self.width = first.height, first.width
        self.views, self.size, self.box = views, size, box_size(size)
        b, half = self.box, self.box // 2
        # the tall frame carries the source's colour description, which the conversion follows
        self._colorspace, self._color_range = first.colorspace, first.color_range
        self._tall = _tall_frame(b, clips * slots)  # clip k's slot t is row k * slots + t
        self._origins = [(box_origin(v.top, self.height, b), box_origin(v.left, self.width, b)) for v in views]
        boxes = [((slice(top, top + b), slice(left, left + b)), (slice(top // 2, top // 2 + half), slice(left // 2, left // 2 + half)))
                 for top, left in self._origins]
        # Per union position, the copies its frame feeds, built once (put runs once per decoded frame):
        # (destination Y, U and V in the tall frame, the box in the luma plane, the box in chroma).
        self._copies: dict[int, list[tuple]] = {}
        rows = self._tall[1]
        for (k, t), position in np.ndenumerate(positions):
            self._copies.setdefault(int(position), []).append((*rows[k * slots + t], *boxes[k]))
        self._pending = set(self._copies)

    def put(self, position: int, frame: av.VideoFrame) -> None:
        """Frame ``position`` of the union: copy its crop boxes (Y, U, V) into the tall frame."""
        if (frame.format.name, frame.height, frame.width) != (FORMAT, self.height, self.width):
            raise ValueError(f"frame {frame.format.name} {frame.width}x{frame.height}, expected {FORMAT} {self.width}x{self.height}")
        y, u, v = frame.planes
        half = self.height // 2
        luma, cb, cr = _plane_rows(y, self.height), _plane_rows(u, half), _plane_rows(v, half)
        for to_luma, to_cb, to_cr, box, chroma_box in self._copies.get(position, ()):
            to_luma[...] = luma[box]
            to_cb[...] = cb[chroma_box]
            to_cr[...] = cr[chroma_box]
        self._pending.discard(position)

    def missing(self) -> list[int]:
        """Union positions that clips use but :meth:`put` has not received."""
        return sorted(self._pending)

    def finish(self) -> torch.Tensor:
        """Convert the tall frame to planar RGB and cut, crop and flip each clip's channels into ``clips``."""
        b, size = self.box, self.size
        tall = self._tall[0]
        tall.colorspace, tall.color_range = self._colorspace, self._color_range
        planes = _CONVERTER.reformat(tall, format=PLANAR_RGB).planes
        _SPARE[tall.width, tall.height] = self._tall
        clips, slots = self.clips.shape[:2]
        for c, p in enumerate(RGB_PLANES):
            channel = _plane_rows(planes[p])[:, :b].reshape(clips, slots, b, b)  # (K, T, B, B)
            for k, (view, (top, left)) in enumerate(zip(self.views, self._origins)):
                dy, dx = view.top - top, view.left - left
                crops = channel[k, :, dy : dy + size, dx : dx + size]  # (T, S, S)
                out = self.clips[k, ..., c]
                if view.flip:  # torch's flip and copy: 2x faster than numpy's copy of a reversed view
                    out.copy_(torch.from_numpy(crops).flip(-1))
                else:
                    np.copyto(out.numpy(), crops)
        return self.clips
