"""The reference backend's CPU video decoding: the union of a sample's frames in one pass with PyAV
(torchcodec when frames are reordered). The per-clip decoders of peer codebases, which the loader benchmark
measures against this, live in ``bench/peers.py``."""

from __future__ import annotations

import io

import av
import numpy as np
from av.video.reformatter import VideoReformatter

# imported at module level: DataLoader workers are forked and inherit it (the import takes seconds). Only
# streams with reordered frames need it, and a machine may lack it (the GPU check's machine has no torchcodec
# and no system FFmpeg for it): then those streams fail by name (torchcodec_decoder) and nothing else changes.
try:
    from torchcodec.decoders import VideoDecoder
except (ImportError, OSError, RuntimeError) as e:  # torchcodec raises RuntimeError when its FFmpeg libraries are missing
    VideoDecoder, _TORCHCODEC_MISSING = None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"

from pipeline.reference.colour import centre_sited, rgb_planes


def torchcodec_decoder(data: bytes, *, threads: int = 1):
    """A torchcodec ``VideoDecoder`` over encoded bytes. ``seek_mode="exact"`` scans the packets once, so
    ``metadata.num_frames`` is the real count and frame indices are exact. RuntimeError when torchcodec
    cannot be imported here."""
    if VideoDecoder is None:
        raise RuntimeError(f"streams with reordered frames need torchcodec, which cannot be imported here ({_TORCHCODEC_MISSING})")
    return VideoDecoder(data, dimension_order="NHWC", num_ffmpeg_threads=threads, seek_mode="exact")


READ_BYTES = 8192
"""Bytes per read from a seekable video file (``pyav_union_decode``)."""

# One YUV->RGB converter per process: its swscale context is reused across frames and videos of the same
# size instead of being set up for every frame (the conversion otherwise costs more than decoding).
_RGB = VideoReformatter()


def rgb_view(frame: av.VideoFrame, out: np.ndarray | None = None) -> np.ndarray:
    """``frame`` converted to RGB as DALI's decoders do it (``colour.py``): (H, W, 3) uint8, written into
    ``out`` (any (H, W, 3) uint8 array or view) or a new array whose memory is channel-first (each channel a
    contiguous block, so the planar conversion's output is copied without interleaving)."""
    red, green, blue = rgb_planes(_RGB, centre_sited(frame))
    if out is None:
        out = np.empty((3, frame.height, frame.width), np.uint8).transpose(1, 2, 0)
    width = frame.width
    for c, plane in enumerate((red, green, blue)):
        out[..., c] = plane[:, :width]
    return out


def pyav_union_decode(source, indices, *, gop: int | None = None, check=None, rgb: bool = True):
    """Yield ``(position, frame)`` for frames ``indices`` (sorted, unique) of an encoded video, in order:
    ``position`` indexes ``indices``, ``frame`` is (H, W, 3) uint8 RGB (see :func:`rgb_view`), or with
    ``rgb=False`` the decoded ``av.VideoFrame`` as it is. Each frame is decoded at most once by one
    single-threaded libavcodec decoder.

    ``source``: the encoded bytes, or a seekable binary file positioned anywhere (e.g.
    ``SampleRecord.open_video()``, which reads the member from its shard on demand).

    Only the packets from the keyframe before each needed run of frames to the run's last frame are read
    and decoded: the container's own index (the MP4 sample table) takes the demuxer there, so the cost
    grows with the frames a sample needs, not with the video's length. A run continues from where the
    decoder is unless the next wanted frame's keyframe lies ahead of it; ``gop`` (the stored GOP length)
    says where that keyframe is expected. It only decides when to seek: the seek itself always lands on
    the real keyframe at or before the frame, so a wrong ``gop`` costs time, never correctness.
    Frame ``i`` is the packet with presentation time ``start + i * frame_duration``: needs a constant
    frame rate with presentation order == decode order (VP9, VP8, MJPEG, H.264 without B-frames, as
    ``preprocess`` writes them); raises ValueError otherwise (possibly after yielding frames: the caller
    then starts over with another decoder).
    ``check(codec=, width=, height=, declared_frames=)`` is called after opening, before decoding.
    Raises IndexError if a frame is past the end or the decoder does not return it.
    """
    wanted = [int(i) for i in indices]
    if any(b <= a for a, b in zip(wanted, wanted[1:])):
        raise ValueError("indices must be sorted and unique")
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    # reads of 8 KiB, not PyAV's 32 KiB: a run of 16 frames at 128 pixels is a few KiB of packets
    with av.open(source, buffer_size=READ_BYTES) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        context = stream.codec_context
        declared = stream.frames or None
        if check is not None:
            check(codec=context.name, width=context.width, height=context.height, declared_frames=declared)
        if stream.average_rate is None or stream.time_base is None:
            raise ValueError("the stream declares no frame rate: use torchcodec")
        step = 1 / (stream.average_rate * stream.time_base)  # frame duration in stream time units
        if step.denominator != 1 or step <= 0:
            raise ValueError(f"frame duration {step} is not a whole number of time units: use torchcodec")
        step, start = int(step), stream.start_time or 0
        if wanted and declared is not None and wanted[-1] >= declared:
            raise IndexError(f"frame {wanted[-1]} requested, the video has {declared}")
        period = gop if isinstance(gop, int) and not isinstance(gop, bool) and gop > 0 else 1
        # The loops below run once per packet and per decoded frame: attributes are read once, the next wanted
        # frame and its expected keyframe are kept in locals (the Python here was 10-15% of a sample's time).
        count = len(wanted)
        packets = None  # the demuxer's packet iterator, from the last seek on
        expected = 0  # frame index of the next packet the demuxer yields
        done = 0  # wanted frames yielded (they come in order)
        target = wanted[0] if wanted else None  # the next wanted frame
        target_key = (target // period) * period if wanted else 0  # where target's keyframe is expected
        sought = -1  # the frame the last seek was for: until it is decoded, another seek would land at the same keyframe

        while done < count:
            if packets is None or (target > sought and target_key > expected):  # its keyframe is ahead: seek
                sought = target
                container.seek(start + target * step, stream=stream, backward=True, any_frame=False)
                context.flush_buffers()
                packets, expected = container.demux(stream), None
            for packet in packets:
                pts = packet.pts
                if packet.size == 0:  # end-of-stream marker: drain the decoder
                    frames = context.decode(None)
                else:
                    index, remainder = divmod((pts if pts is not None else -1) - start, step)
                    if pts is None or remainder or (expected is not None and index != expected):
                        raise ValueError(f"packet timestamps are not one frame apart at frame {expected}: use torchcodec")
                    if expected is None and not packet.is_keyframe:
                        raise ValueError(f"seeking for frame {target} did not land on a keyframe: use torchcodec")
                    expected = index + 1
                    frames = context.decode(packet)
                for frame in frames:
                    pts = frame.pts
                    if pts is None or done == count:
                        continue
                    index = (pts - start) // step
                    if index >= target:
                        if index != target:
                            raise IndexError(f"decoder skipped frame {target}")
                        yield done, rgb_view(frame) if rgb else frame
                        done += 1
                        if done < count:
                            target = wanted[done]
                            target_key = (target // period) * period
                if done == count or (target > sought and target_key > expected):
                    break  # finished, or the next wanted frame is reached faster by a seek
            else:
                if done < count:
                    raise IndexError(f"decoder did not return frame {target}")


def pyav_union_frames(source, indices, *, gop: int | None = None, check=None) -> np.ndarray:
    """Frames ``indices`` (sorted, unique) of an encoded video (bytes or a file) stacked: (N, H, W, 3)
    uint8 (see :func:`pyav_union_decode`), over channel-first (N, 3, H, W) memory: the planar conversion's
    channels are copied as blocks, and the resize (``views.assemble_clips``) wants channel-first anyway."""
    frames = None
    for position, frame in pyav_union_decode(source, indices, gop=gop, check=check, rgb=False):
        if frames is None:
            frames = np.empty((len(indices), 3, frame.height, frame.width), np.uint8).transpose(0, 2, 3, 1)
        rgb_view(frame, out=frames[position])
    if frames is None:
        raise IndexError("no frames requested")
    return frames
