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

**The witness** (``witness=True``, what the DALI backend asks for). DALI 2.4's decoders report success for a
frame they never wrote: ``FramesDecoderBase::DecodeFramesImpl`` ignores ``ReadNextFrame``'s result, and the
mixed decoder's ``ReadNextFrameWithIndex`` returns true at the end of the stream whether or not the frame it
looked for came out. The output slot then holds whatever DALI's memory pool had there, often another
sample's frame. So the cut stream ends with a copy of its own first packet (a keyframe, which decodes alone
and to the same picture) as one more frame, and DALI is asked for it and for the stream's first frame:
every wanted frame then comes out before the stream's end, and the two witness frames must be equal. A
decoder that ran out of stream, lost its place in it (frames handed out under the wrong timestamp) or left
slots unwritten fails that test, and the sample is an error instead of a batch with a frame it did not get.
``CutStream.request`` is what DALI is fed; ``CutStream.witness`` the two slots of its output to compare.
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
    """Frames DALI decodes for this sample's wanted frames: from the cut stream's start to its last wanted frame."""
    codec: str
    """The stream's codec name (libavcodec's: ``vp9``, ``h264``, ``mjpeg`` ...)."""
    request: np.ndarray | None = None
    """Frame indices to ask DALI for (int32): ``frame_indices``, then the witness frames (None: ``frame_indices``)."""
    witness: tuple[int, int] | None = None
    """Two positions in DALI's output for ``request`` that must hold the same picture (the stream's first
    frame and its copy at the end); None without a witness."""

    @property
    def frames_to_request(self) -> np.ndarray:
        return self.frame_indices if self.request is None else self.request


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


#: Codecs whose decoders may take two adjacent keyframes for one picture (H.264 and HEVC tell pictures apart by
#: slice-header fields that two IDR pictures can share), so the witness copy never follows a keyframe there.
_MERGES_ADJACENT_KEYFRAMES = frozenset({"h264", "hevc"})


def cut_stream(record: SampleRecord, data: bytes, wanted, *, witness: bool = False) -> CutStream:
    """``data``'s packets that decode ``wanted`` (source frame indices, sorted and unique), remuxed.
    ``witness``: end the cut with the witness frame (see the module docstring).

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
        return _remux(record, stream, packets, wanted, witness=witness)


def cut_sample(record: SampleRecord, wanted: np.ndarray, witness: bool = True) -> CutStream | BadSampleError:
    """Read ``record``'s video and cut it for ``wanted`` (what the DALI backend's cutting processes run);
    a problem with the sample comes back as its BadSampleError."""
    try:
        return cut_stream(record, record.read_video(), wanted, witness=witness)
    except BadSampleError as e:
        return e
    except OSError as e:
        return BadSampleError(record.shard, record.key, f"read failed: {e}")


def _remux(record: SampleRecord, stream, packets: list, wanted: np.ndarray, *, witness: bool) -> CutStream:
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
    position = np.searchsorted(source_frames, wanted)
    if np.any(position >= len(source_frames)) or np.any(source_frames[np.minimum(position, len(source_frames) - 1)] != wanted):
        raise AssertionError(f"{record.key}: cut lost a wanted frame")  # a bug here, not bad data
    codec = stream.codec_context.name
    tail = None  # the witness packet's (pts, dts), when there is one
    if witness:
        after = keep[-1] + 1
        if in_order and packets[keep[-1]].is_keyframe and after < len(packets) and not packets[after].is_keyframe:
            # the witness keyframe should not follow a keyframe: the next packet (it depends on that keyframe
            # only, so it decodes) goes in between; it is never asked for
            keep = np.append(keep, after)
            stamps.append(_next_stamp(stamps, pts))
            source_frames = keep
        if not (packets[keep[-1]].is_keyframe and codec in _MERGES_ADJACENT_KEYFRAMES):
            step = _frame_step(pts)
            tail = (max(p for p, _ in stamps) + step, max(d for _, d in stamps) + step)
    if tail is not None:  # the stream's first packet (a keyframe) once more, copied before muxing hands it over
        first_packet = packets[keep[0]]
        witness_packet = av.Packet(bytes(first_packet))
        witness_packet.is_keyframe, witness_packet.time_base = True, first_packet.time_base
        witness_packet.duration = _frame_step(pts)  # 0 would end MP4's edit list before it: not presented
    out = io.BytesIO()
    fmt = VIDEO_FORMATS[record.video_ext]
    with av.open(out, mode="w", format=fmt) as muxer:
        target = muxer.add_stream_from_template(stream)
        for j, (p, d) in zip(keep.tolist(), stamps):
            _mux(muxer, packets[j], target, p, d)
        if tail is not None:
            _mux(muxer, witness_packet, target, *tail)
    request, slots = None, None
    if tail is not None:
        tail_index = len(source_frames)  # the last frame in presentation order
        first = np.flatnonzero(position == 0)
        if first.size:  # the first frame is wanted already: compare the tail with that slot
            request, slots = np.append(position, tail_index), (int(first[0]), len(position))
        else:
            request, slots = np.append(position, [0, tail_index]), (len(position), len(position) + 1)
        request = request.astype(np.int32)
    return CutStream(np.frombuffer(out.getvalue(), dtype=np.uint8), source_frames, position.astype(np.int32),
                     int(position[-1]) + 1, codec, request, slots)


def _mux(muxer, packet, target, pts: int, dts: int) -> None:
    packet.stream = target
    packet.pts, packet.dts = pts, dts
    muxer.mux(packet)


def _frame_step(pts: np.ndarray) -> int:
    """One frame's duration in the stream's time base (the smallest gap between presentation timestamps)."""
    gaps = np.diff(np.sort(pts))
    gaps = gaps[gaps > 0]
    return int(gaps.min()) if gaps.size else 1


def _next_stamp(stamps: list, pts: np.ndarray) -> tuple[int, int]:
    """The renumbered timeline's next (pts, dts) for an in-order cut (see :func:`_remux`)."""
    j = len(stamps)
    value = int(pts[j]) if j < len(pts) else int(pts[-1]) + _frame_step(pts)
    return value, value
