"""CPU video decoders outside DALI: the reference backend's (the union of a sample's frames in one pass with
PyAV, torchcodec when frames are reordered) and the per-clip decoding of peer codebases (PyAV, torchcodec,
decord), measured by ``bench``."""

from __future__ import annotations

import io

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

# imported at module level: DataLoader workers are forked and inherit it (the import takes seconds)
from torchcodec.decoders import VideoDecoder


def torchcodec_decoder(data: bytes, *, threads: int = 1) -> VideoDecoder:
    """A torchcodec decoder over encoded bytes. ``seek_mode="exact"`` scans the packets once, so
    ``metadata.num_frames`` is the real count and frame indices are exact."""
    return VideoDecoder(data, dimension_order="NHWC", num_ffmpeg_threads=threads, seek_mode="exact")


def torchcodec_frames(data: bytes, indices, *, threads: int = 1) -> torch.Tensor:
    """Frames ``indices`` (any order, repeats allowed) of an encoded video: (N, H, W, 3) uint8.

    torchcodec seeks to the keyframe before a requested frame when that is cheaper than decoding on.
    Raises IndexError for indices past the end."""
    return torchcodec_decoder(data, threads=threads).get_frames_at([int(i) for i in indices]).data


def pyav_frames(data: bytes, indices) -> np.ndarray:
    """Peers' PyAV clip reading: seek to the keyframe before the first wanted frame, decode forward until
    the last one, keep the wanted ones. (N, H, W, 3) uint8 in the order of ``indices``."""
    wanted = sorted(set(int(i) for i in indices))
    got: dict[int, np.ndarray] = {}
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        rate = stream.average_rate
        time_base = stream.time_base
        start_pts = int(wanted[0] / rate / time_base) if wanted[0] else 0
        container.seek(start_pts, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            index = int(round(float(frame.pts * time_base * rate)))
            if index in wanted and index not in got:
                got[index] = frame.to_ndarray(format="rgb24")
            if index >= wanted[-1]:
                break
    missing = [i for i in wanted if i not in got]
    if missing:
        raise IndexError(f"PyAV did not return frames {missing[:5]}")
    return np.stack([got[int(i)] for i in indices])


def decord_frames(data: bytes, indices) -> np.ndarray:
    """Peers' decord clip reading (``VideoReader.get_batch``). (N, H, W, 3) uint8."""
    import decord

    reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
    return reader.get_batch([int(i) for i in indices]).asnumpy()


# One YUV->RGB converter per process: its swscale context is reused across frames and videos of the same
# size instead of being set up for every frame (the conversion otherwise costs more than decoding).
_RGB = VideoReformatter()


def rgb_view(frame: av.VideoFrame) -> np.ndarray:
    """``frame`` converted to RGB: an (H, W, 3) uint8 view of the converted frame's own buffer (no copy;
    the array keeps that buffer alive)."""
    rgb = _RGB.reformat(frame, format="rgb24")
    plane = rgb.planes[0]
    rows = np.frombuffer(plane, np.uint8)[: rgb.height * plane.line_size].reshape(rgb.height, plane.line_size)
    return rows[:, : rgb.width * 3].reshape(rgb.height, rgb.width, 3)


def pyav_union_decode(data: bytes, indices, *, check=None, rgb: bool = True):
    """Yield ``(position, frame)`` for frames ``indices`` (sorted, unique) of an encoded video, in order:
    ``position`` indexes ``indices``, ``frame`` is (H, W, 3) uint8 RGB (a view of the converted frame's
    own buffer, see :func:`rgb_view`), or with ``rgb=False`` the decoded ``av.VideoFrame`` as it is. Each
    frame is decoded at most once by one single-threaded libavcodec decoder.

    The packets are demuxed once (cheap: no decoding); for each wanted frame the decoder continues from
    where it is, or restarts at the keyframe before the frame when that keyframe lies ahead (a seek within
    the packet list). So a sample's clips cost the union of their keyframe-to-last-frame ranges, the
    bench's decode limit, plus the RGB conversion of the wanted frames only (none with ``rgb=False``).
    Needs presentation order == decode order (VP9, VP8, MJPEG, H.264 without B-frames); raises ValueError
    otherwise, before yielding anything.
    ``check(codec=, width=, height=, declared_frames=)`` is called after demuxing, before decoding.
    Raises IndexError if a frame is past the end or the decoder does not return it.
    """
    wanted = [int(i) for i in indices]
    if any(b <= a for a, b in zip(wanted, wanted[1:])):
        raise ValueError("indices must be sorted and unique")
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        packets = [p for p in container.demux(stream) if p.size]
        if check is not None:
            check(codec=stream.codec_context.name, width=stream.codec_context.width, height=stream.codec_context.height,
                  declared_frames=len(packets))
        pts = [p.pts for p in packets]
        if any(a is None for a in pts) or any(b <= a for a, b in zip(pts, pts[1:])):
            raise ValueError("packets are not in presentation order (B-frames?): use torchcodec")
        if wanted and wanted[-1] >= len(packets):
            raise IndexError(f"frame {wanted[-1]} requested, the video has {len(packets)}")
        index_of_pts = {p: i for i, p in enumerate(pts)}
        position_of = {index: position for position, index in enumerate(wanted)}
        keyframes = np.flatnonzero([p.is_keyframe for p in packets])
        context = stream.codec_context
        next_packet, done = 0, 0  # packets fed to the decoder; wanted frames yielded (they come in order)
        for target in wanted:
            if done > position_of[target]:  # already returned while decoding towards an earlier target
                continue
            lead = int(keyframes[keyframes <= target].max()) if keyframes.size and keyframes[0] <= target else 0
            if lead > next_packet:  # jumping to the keyframe is cheaper than decoding on
                context.flush_buffers()
                next_packet = lead
            while done <= position_of[target] and next_packet <= len(packets):
                # the last round drains frames still inside the decoder at the end of the stream
                frames = context.decode(packets[next_packet] if next_packet < len(packets) else None)
                next_packet += 1
                for frame in frames:
                    position = position_of.get(index_of_pts.get(frame.pts))
                    if position is not None and position >= done:
                        if position != done:
                            raise IndexError(f"decoder skipped frame {wanted[done]}")
                        yield position, rgb_view(frame) if rgb else frame
                        done += 1
            if done <= position_of[target]:
                raise IndexError(f"decoder did not return frame {target}")


def pyav_union_frames(data: bytes, indices, *, check=None) -> np.ndarray:
    """Frames ``indices`` (sorted, unique) of an encoded video stacked: (N, H, W, 3) uint8 (see
    :func:`pyav_union_decode`)."""
    frames = [frame for _, frame in pyav_union_decode(data, indices, check=check)]
    if not frames:
        raise IndexError("no frames requested")
    return np.stack(frames)
