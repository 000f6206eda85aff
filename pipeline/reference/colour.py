"""YUV -> RGB the way DALI's video decoders do it, so that the two backends return the same pixels.

Measured against DALI 2.4's CPU decoder (``docs/pipeline.md``, "Pixels"): its RGB is, bit for bit,
libswscale's with

* chroma upsampled **bilinearly**, each chroma sample sited at the centre of its 2x2 luma block;
* **BT.601** coefficients whatever matrix the stream declares (a BT.709-tagged stream too);
* the stream's own **range** (limited for ``yuv420p``, full for ``yuvj420p`` or a full-range tag);
* accurate rounding (``SWS_ACCURATE_RND``).

Its GPU decoder (``mixed``) does the same in a CUDA kernel (bilinear at the centre, BT.601, the interpolated
chroma rounded to 8 bits before the matrix). libswscale's default for a conversion that does not resize,
which PyAV's ``to_ndarray``/``reformat`` use, instead repeats each chroma sample over its 2x2 block: at a
saturated colour edge a pixel's colour then moves by up to 100-190 levels against DALI's.

libswscale follows the chroma siting a frame carries, and decoders set it (H.264: left, not centre), while
DALI ignores it. :func:`centre_sited` copies a decoded frame into one that carries none (libswscale's default
then is the centre, as DALI's); the tall frames of ``yuv_clips`` are made here and carry none either.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import Colorspace, Interpolation, VideoReformatter

#: libswscale flags of the conversion: bilinear chroma upsampling (bicubic is up to 63 levels off DALI's)
#: with accurate rounding. Without ACCURATE_RND a conversion that does not resize takes libswscale's fast
#: path, which repeats chroma samples instead of interpolating them, whatever the interpolation asked for.
INTERPOLATION = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
#: The YUV -> RGB matrix, whatever the stream declares (DALI's decoders always use BT.601).
MATRIX = Colorspace.ITU601
#: The planar RGB format converted to (each channel leaves as one contiguous block), and which of its planes
#: holds R, G and B.
PLANAR_RGB, RGB_PLANES = "gbrp", (2, 0, 1)

# Fresh frames that centre_sited copies into, by (format, width, height): allocating one per decoded frame
# costs page faults each time.
_SPARE: dict[tuple[str, int, int], av.VideoFrame] = {}


def plane_rows(plane, height: int | None = None) -> np.ndarray:
    """A frame plane as a (height, line_size) uint8 array over the frame's own buffer (no copy). ``height``:
    the plane's, when the caller knows it (one call into PyAV less, in per-frame paths)."""
    return np.ndarray((plane.height if height is None else height, plane.line_size), np.uint8, plane)


def centre_sited(frame: av.VideoFrame) -> av.VideoFrame:
    """``frame``'s pixels and range in a frame without a chroma siting (so converted with centre siting, as
    DALI does). The returned frame is reused by the next call for frames of the same format and size:
    convert it before asking for another."""
    key = (frame.format.name, frame.width, frame.height)
    fresh = _SPARE.get(key)
    if fresh is None:
        fresh = _SPARE[key] = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for source, target in zip(frame.planes, fresh.planes):
        rows, width = plane_rows(target), min(source.line_size, target.line_size)
        rows[:, :width] = plane_rows(source)[:, :width]
    fresh.color_range = frame.color_range
    return fresh


def rgb_planes(converter: VideoReformatter, frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``frame`` (planar YUV) converted to RGB as DALI does: the (R, G, B) planes, each (H, line_size) uint8
    over the converted frame's buffer (columns past W are padding). ``converter`` keeps its libswscale
    context while frames keep their size. One thread: workers parallelize across samples."""
    converted = converter.reformat(frame, format=PLANAR_RGB, src_colorspace=MATRIX, interpolation=INTERPOLATION, threads=1)
    planes = converted.planes
    return tuple(plane_rows(planes[p]) for p in RGB_PLANES)
