"""Bound the decode work of DALI's video decoder per sample by cutting the encoded stream before decoding.

DALI's video decoders (CPU and ``mixed``) do not seek: asked for frames ``F``, they decode every frame from
the start of the stream up to ``max(F)``. A sample whose clips sit late in a long video therefore costs
the whole video. :func:`cut_stream` remuxes (copies packets, decodes nothing) only the packets a seeking
decoder would decode into a new container, and maps the sample's frame indices into it; DALI then decodes
that short stream from its start.

* Streams whose packets are in presentation order (VP9, VP8, MJPEG, H.264 without B-frames): the packets
  of every *run* ``[keyframe at or before f, f]`` over the wanted frames ``f`` (runs that touch are
  merged, so the decoder never jumps backwards), concatenated, timestamps renumbered. Decoded frames =
  the frames a decoder that jumps to a keyframe whenever that saves work would decode (``decoded``).
  Each run starts on a keyframe, and the project's GOPs are closed (preprocess), so runs decode alone.
* Streams with reordered frames (H.264 with B-frames): one cut, from the keyframe at or before the first
  wanted frame to the end of the GOP that holds the last one, every timestamp shifted by the same amount
  (so decode/presentation order is untouched).

The cut stream is muxed into the container the sample came in (MP4 or AVI), which DALI reads with
libavformat like the original.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from pipeline.io.shard_reader import BadSampleError, SampleRecord, check_stream, video_stream
from shardformat import VIDEO_FORMATS


@dataclass(frozen=True)
class CutStream:
    """A sample's encoded video cut to what its clips need."""

    data: np.ndarray
    """Encoded bytes of the cut stream, uint8 (what DALI is fed)."""
    source_frames: np.ndarray
    """Source frame index of each frame the cut stream presents, in order (int64)."""
    frame_indices: np.ndarray
    """The wanted frames as indices into the cut stream (int32, same order as asked)."""
    decoded: int
    """Frames DALI decodes for this sample: from the cut stream's start to its last wanted frame."""
    codec: str
    """The stream's codec name (libavcodec's: ``vp9``, ``h264``, ``mjpeg`` ...)."""


def _runs(wanted: np.ndarray, keyframes: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` frame ranges that decode ``wanted`` (sorted, unique) from keyframes:
    a new run starts when the keyframe before a wanted frame lies beyond the current run's end."""
    runs: list[list[int]] = []
    for f in wanted.tolist():
        lead = int(keyframes[np.searchsorted(keyframes, f, side="right") - 1])
        if runs and lead <= runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([lead, f])
    return [(a, b) for a, b in runs]


def cut_stream(record: SampleRecord, data: bytes, wanted) -> CutStream:
    """``data``'s packets that decode ``wanted`` (source frame indices, sorted and unique), remuxed.

    Checks the container against the json first (codec, size, frame count: :func:`check_stream`), and
    raises :class:`BadSampleError` naming the shard and key for anything unreadable."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if wanted.size == 0 or np.any(np.diff(wanted) <= 0):
        raise ValueError("wanted frames must be sorted, unique and not empty")
    with video_stream(record, data) as (container, stream):
        ctx = stream.codec_context
        packets = [p for p in container.demux(stream) if p.size]
        check_stream(record, codec=ctx.name, width=ctx.width, height=ctx.height, declared_frames=len(packets))
        if len(packets) != record.video_frames:
            raise BadSampleError(record.shard, record.key, f"json says {record.video_frames} frames, the video holds {len(packets)} packets")
        if wanted[0] < 0 or wanted[-1] >= len(packets):
            raise BadSampleError(record.shard, record.key, f"frames {wanted[0]}..{wanted[-1]} asked, the video has {len(packets)}")
        if any(p.pts is None or p.dts is None for p in packets):
            raise BadSampleError(record.shard, record.key, "packets without timestamps")
        return _remux(record, stream, packets, wanted)


def _remux(record: SampleRecord, stream, packets: list, wanted: np.ndarray) -> CutStream:
    pts = np.array([p.pts for p in packets], dtype=np.int64)
    order = np.argsort(pts, kind="stable")
    presentation = np.empty(len(packets), dtype=np.int64)  # decode position -> presentation index
    presentation[order] = np.arange(len(packets))
    keyframes = np.flatnonzero([p.is_keyframe for p in packets])  # decode positions
    if keyframes.size == 0 or keyframes[0] != 0:
        raise BadSampleError(record.shard, record.key, "the stream does not start with a keyframe")
    in_order = bool(np.all(presentation == np.arange(len(packets))))
    if in_order:
        keep = np.concatenate([np.arange(a, b + 1) for a, b in _runs(wanted, keyframes)])
        # renumbered timeline: kept packet j takes the timestamps of the source's packet j (constant rate)
        stamps = [(int(pts[j]), int(pts[j])) for j in range(len(keep))]
        source_frames = keep
    else:
        # keyframe positions are GOP starts in both orders (closed GOPs present their own frames only)
        first = int(keyframes[np.searchsorted(keyframes, int(order[wanted[0]]), side="right") - 1])
        gop_end = np.searchsorted(keyframes, int(order[wanted[-1]]), side="right")
        stop = int(keyframes[gop_end]) if gop_end < keyframes.size else len(packets)
        keep = np.arange(first, stop)
        shift = int(packets[first].dts) - int(packets[0].dts)
        stamps = [(int(packets[j].pts) - shift, int(packets[j].dts) - shift) for j in keep]
        source_frames = np.sort(presentation[keep])
    out = io.BytesIO()
    fmt = VIDEO_FORMATS[record.video_ext]
    with av.open(out, mode="w", format=fmt) as muxer:
        target = muxer.add_stream_from_template(stream)
        for j, (p, d) in zip(keep.tolist(), stamps):
            packet = packets[j]
            packet.stream = target
            packet.pts, packet.dts = p, d
            muxer.mux(packet)
    position = np.searchsorted(source_frames, wanted)
    if np.any(position >= len(source_frames)) or np.any(source_frames[np.minimum(position, len(source_frames) - 1)] != wanted):
        raise AssertionError(f"{record.key}: cut lost a wanted frame")  # a bug here, not bad data
    return CutStream(np.frombuffer(out.getvalue(), dtype=np.uint8), source_frames, position.astype(np.int32),
                     int(position[-1]) + 1, stream.codec_context.name)
