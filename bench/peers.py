"""Per-clip decoding as peer codebases do it (PyAV, torchcodec, decord): one decode call per clip, which
``python -m bench loader`` times against the loaders. Not used by the library."""

from __future__ import annotations

import io

import av
import numpy as np
import torch

from pipeline.reference.decode import torchcodec_decoder


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


PEERS = {"pyav_per_clip": pyav_frames, "torchcodec_per_clip": torchcodec_frames, "decord_per_clip": decord_frames}
"""Method name (in the benchmark's results) -> decode function ``(bytes, indices) -> (N, H, W, 3) uint8``."""
