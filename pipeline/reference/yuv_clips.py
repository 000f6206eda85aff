"""Cut clips out of decoded YUV 4:2:0 frames and convert only the crops to RGB, in one call per sample.

Converting every wanted frame to RGB costs more than the crops need (a 112x112 crop keeps 43% of a
228x128 frame) and PyAV's per-call overhead is paid once per frame. Here each clip slot's crop is copied,
still in YUV, into one tall frame per sample (clip ``k``'s slot ``t`` at rows ``(k*T + t)*P``), and
libswscale converts that frame in one call, as DALI converts whole frames (``colour.py``: chroma upsampled
bilinearly). A crop's pixels then depend on the chroma samples around it too, so each crop is copied with
a margin: the box starts at the first chroma sample the crop's first row (column) interpolates from, and is
``P = box_size(S) + 2`` pixels wide and high (even), which holds every chroma sample the crop's pixels
interpolate between. Where the box runs past the frame's edge the frame's edge samples are repeated into it,
as libswscale does at a whole frame's edge. The result is bit-identical to converting whole frames and
cropping (``tests/test_reference_yuv_clips.py`` and ``tests/test_backend_agreement.py`` check it).

The tall frame is converted to planar RGB (``gbrp``), not packed ``rgb24``: each channel then leaves as a
contiguous block, so the copy into a channel-first ring slot needs no deinterleaving, and the bilinear
conversion to planar RGB costs a sixth of the one to packed RGB (1.7 against 10 ms for 64 slots of
116 x 116, the boxes of 112-pixel crops; one thread).

Used by the reference backend when the stored frames need no resize (see ``stream.py``); frames in any
other pixel format, or too small for the box, go through :class:`pipeline.views.ClipWriter` instead.
"""

from __future__ import annotations

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from pipeline.reference.colour import plane_rows, rgb_planes
from pipeline.views import View, clip_buffer

#: The pixel format this path handles (VP9/H.264 shards decode to it).
FORMAT = "yuv420p"

# One converter per process: its swscale context is reused while the tall frames keep their size.
_CONVERTER = VideoReformatter()
# Tall frames no writer holds, by (width, height), with their rows per clip slot (see _tall_frame):
# allocating a new 1.4 MB frame per sample cost about 0.2 ms (page faults).
_SPARE: dict[tuple[int, int], tuple] = {}


def box_size(size: int) -> int:
    """Side of the even-aligned box that holds a ``size`` crop at any offset: the next even number > size."""
    return size + 2 - size % 2


def padded_size(size: int) -> int:
    """Side of the box a ``size`` crop is copied in, with the chroma around it (see the module docstring)."""
    return box_size(size) + 2


def padded_origin(offset: int) -> int:
    """Even luma row (or column) a padded box starts on for a crop starting at ``offset``: that of the first
    chroma sample the crop's first pixel interpolates from (-2 for a crop on the frame's edge: the margin
    outside the frame is filled with the edge samples)."""
    return 2 * ((offset - 1) // 2)


def _span(origin: int, length: int, extent: int) -> slice | np.ndarray:
    """Rows (or columns) ``origin .. origin + length - 1`` of a plane ``extent`` long: a slice when they lie
    inside it, else their indices clamped to it (the edge repeated, as libswscale does at a frame's edge)."""
    if origin >= 0 and origin + length <= extent:
        return slice(origin, origin + length)
    return np.clip(np.arange(origin, origin + length), 0, extent - 1)


def _box(rows: slice | np.ndarray, columns: slice | np.ndarray) -> tuple:
    """A numpy index for ``rows`` x ``columns`` (two index arrays need ``np.ix_`` to select a block)."""
    if isinstance(rows, np.ndarray) and isinstance(columns, np.ndarray):
        return np.ix_(rows, columns)
    return rows, columns


def _tall_frame(box: int, rows: int) -> tuple:
    """A yuv420p frame of ``rows`` slots of ``box`` x ``box`` stacked vertically, and each slot's (Y, U, V)
    box as array views into it; a spare one if there is one. Hand it back with
    ``_SPARE[frame.width, frame.height] = ...`` once converted."""
    width, height = box, box * rows
    spare = _SPARE.pop((width, height), None)
    if spare is not None:
        return spare
    frame = av.VideoFrame(width, height, FORMAT)
    luma, cb, cr = (plane_rows(p) for p in frame.planes)
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
        self.views, self.size, self.box = views, size, padded_size(size)
        p, half = self.box, self.box // 2
        self._color_range = first.color_range  # the conversion follows the stream's range (colour.py)
        self._tall = _tall_frame(p, clips * slots)  # clip k's slot t is row k * slots + t
        self._origins = [(padded_origin(v.top), padded_origin(v.left)) for v in views]
        boxes = [(_box(_span(top, p, self.height), _span(left, p, self.width)),
                  _box(_span(top // 2, half, self.height // 2), _span(left // 2, half, self.width // 2)))
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
        luma, cb, cr = plane_rows(y, self.height), plane_rows(u, half), plane_rows(v, half)
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
        p, size = self.box, self.size
        tall = self._tall[0]
        tall.color_range = self._color_range
        planes = rgb_planes(_CONVERTER, tall)
        _SPARE[tall.width, tall.height] = self._tall
        clips, slots = self.clips.shape[:2]
        for c, plane in enumerate(planes):
            channel = plane.reshape(clips, slots, p, plane.shape[1])  # (K, T, P, line size): whole rows, no copy
            for k, (view, (top, left)) in enumerate(zip(self.views, self._origins)):
                dy, dx = view.top - top, view.left - left
                crops = channel[k, :, dy : dy + size, dx : dx + size]  # (T, S, S)
                out = self.clips[k, ..., c]
                if view.flip:  # torch's flip and copy: 2x faster than numpy's copy of a reversed view
                    out.copy_(torch.from_numpy(crops).flip(-1))
                else:
                    np.copyto(out.numpy(), crops)
        return self.clips
