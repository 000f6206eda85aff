"""One video in, normalized re-encoded video(s) out: probe, transcode, validate by decoding.

Everything here runs inside a worker process: sources are inspected and outputs validated with PyAV,
the transcode itself runs the ``ffmpeg`` binary (command built with ffmpeg-python).
A bad input never raises out of :func:`process_video` (one input) or :func:`process_videos` (a group of inputs
sharing one ffmpeg process): it gets a :class:`Rejection` with a one-line reason.
Paths are always handed to ffmpeg as ``file:`` + absolute path, so names with spaces, quotes, unicode,
a leading dash or a colon are never parsed as options or protocols.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import math
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import ffmpeg


@dataclass(frozen=True)
class Codec:
    """How one output codec is encoded and stored."""

    name: str
    """Value of ``--codec`` and of ``codec`` in each sample's JSON."""
    ffmpeg_codec: str
    """Codec name ffprobe/PyAV report for the stored stream."""
    ext: str
    """Extension of the video member in the shards (``KEY.<ext>``)."""
    all_intra: bool = False


CODECS: dict[str, Codec] = {
    # VP9 in MP4: decoded by DALI's CPU decoder (frame-exact, verified in tests), NVDEC, PyAV and torchcodec.
    "vp9": Codec("vp9", "vp9", "mp4"),
    # H.264 in MP4: NVDEC/PyAV/torchcodec only (DALI's CPU decoder cannot decode H.264).
    "h264": Codec("h264", "h264", "mp4"),
    # All-intra Motion JPEG in AVI: every frame is a keyframe, so seeking is free but files are larger.
    "mjpeg": Codec("mjpeg", "mjpeg", "avi", all_intra=True),
}

#: Largest frame rate accepted from a source's metadata; above it the rate is treated as bogus.
_MAX_SANE_FPS = 240


@dataclass(frozen=True)
class EncodeParams:
    """Normalization applied to every video (all fields end up in the manifest)."""

    short_side: int = 128
    """Output short side in pixels (even); the long side keeps the display aspect, rounded to even."""
    fps: float | None = None
    """Output constant frame rate; ``None`` keeps the source's rate (made constant)."""
    codec: str = "vp9"
    gop: int = 16
    """Frames per closed GOP (keyframe interval); ignored by all-intra codecs."""
    max_frames: int | None = None
    """Split videos into consecutive segments of at most this many frames; ``None``: one sample per video."""
    min_frames: int = 16
    """Videos (after normalization) with fewer decodable frames are rejected."""

    def __post_init__(self) -> None:
        if self.short_side < 16 or self.short_side % 2:
            raise ValueError(f"short_side must be an even number >= 16, got {self.short_side}")
        if self.fps is not None and not 0 < self.fps <= _MAX_SANE_FPS:
            raise ValueError(f"fps must be in (0, {_MAX_SANE_FPS}], got {self.fps}")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, got {self.codec!r}")
        if self.gop < 1:
            raise ValueError(f"gop must be >= 1, got {self.gop}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")
        if self.max_frames is not None and self.max_frames < 2 * self.min_frames:
            # Segments are balanced (see plan_segments): each holds more than max_frames/2 frames,
            # so this bound guarantees every segment keeps at least min_frames frames.
            raise ValueError(f"max_frames must be >= 2 * min_frames ({2 * self.min_frames}), got {self.max_frames}")


@dataclass(frozen=True)
class Segment:
    """One stored video file produced from a source video."""

    file: str
    """File name inside the staging folder."""
    segment_index: int
    segment_start: int
    """Index of this segment's first frame in the normalized (constant-rate) frame sequence of the source."""
    frames: int
    """Exact number of decodable frames, counted by decoding the stored file."""
    width: int
    height: int
    fps: float
    fps_rational: str
    """The exact constant rate, e.g. ``30000/1001``."""
    bytes: int


@dataclass(frozen=True)
class Rejection:
    reason: str
    stage: str
    """``input`` (file level), ``probe`` (not a usable video), ``transcode`` (ffmpeg failed) or ``validate`` (output check)."""


class _Reject(Exception):
    def __init__(self, reason: str, stage: str):
        super().__init__(reason)
        self.rejection = Rejection(_one_line(reason), stage)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _url(path: Path) -> str:
    return "file:" + str(Path(path).absolute())


# --------------------------------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class SourceInfo:
    """What the transcode needs to know about a source's first video stream."""

    format_name: str
    width: int
    """Coded frame size, before rotation and sample aspect ratio."""
    height: int
    sample_aspect_ratio: Fraction
    rotation: int
    """Display rotation in degrees (0, 90, 180, 270), from the display matrix of the first decoded frame."""
    nominal_rate: Fraction | None
    """The container's nominal rate (ffprobe's ``r_frame_rate``); None if missing or absurd."""
    average_rate: Fraction | None
    """Frames / duration (ffprobe's ``avg_frame_rate``); None if missing or absurd."""

    @property
    def rate(self) -> Fraction | None:
        """Constant rate to encode at: the nominal rate when it agrees with the average within 2%
        (a constant-rate source), else the average (a variable-rate source)."""
        nominal, average = self.nominal_rate, self.average_rate
        if nominal and average:
            return nominal if abs(nominal - average) <= average / 50 else average
        return nominal or average


def _sane_rate(rate) -> Fraction | None:
    return Fraction(rate) if rate and 0 < rate <= _MAX_SANE_FPS else None


_IMAGE_FORMATS = ("image2", "_pipe", "gif")  # demuxers of still images (and gif, rarely a training video)


def check_source(path: Path) -> SourceInfo:
    """Open a source with PyAV (milliseconds, no ffprobe process), decode its first video frame, and
    reject what cannot be a training video."""
    if not path.is_file():
        raise _Reject("file not found", "input")
    if path.stat().st_size == 0:
        raise _Reject("empty file: 0 bytes", "input")
    try:
        with av.open(str(Path(path).absolute()), metadata_errors="replace") as container:  # non-UTF-8 tags are common
            format_name = container.format.name
            videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
            if not videos:
                if container.streams.audio:
                    raise _Reject("audio only: no video stream", "probe")
                raise _Reject(f"no video stream: format {format_name}", "probe")
            if any(tag in format_name for tag in _IMAGE_FORMATS):
                raise _Reject(f"still image, not a video: format {format_name}", "probe")
            stream = videos[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise _Reject("no decodable video frame", "probe")
            return SourceInfo(
                format_name=format_name, width=first.width, height=first.height,
                sample_aspect_ratio=_sane_rate(stream.sample_aspect_ratio) or Fraction(1),
                rotation=int(round((first.rotation or 0) / 90)) * 90 % 360,
                nominal_rate=_sane_rate(stream.base_rate), average_rate=_sane_rate(stream.average_rate),
            )
    except av.FFmpegError as err:
        raise _Reject(f"not a readable video container: {getattr(err, 'strerror', None) or err}", "probe") from None


# ----------------------------------------------------------------------------------------------- encoding


def output_size(source: SourceInfo, short_side: int) -> tuple[int, int]:
    """``(width, height)`` of the output: display aspect (sample aspect ratio and rotation applied),
    short side = ``short_side``, long side rounded to an even number."""
    width, height = source.width * float(source.sample_aspect_ratio), float(source.height)
    if source.rotation in (90, 270):
        width, height = height, width
    scale = short_side / min(width, height)
    long_side = max(2, 2 * round(max(width, height) * scale / 2))
    return (short_side, long_side) if width <= height else (long_side, short_side)


def encoder_args(codec: str, gop: int) -> dict:
    """ffmpeg output options for one codec (one thread: workers parallelize across videos, and
    single-threaded encoders give byte-identical output whatever the worker count)."""
    if codec == "vp9":
        # Realtime deadline + cpu-used 8 is ~10x faster than "good" and still fine at 128 px;
        # keyframes exactly every `gop` frames (VP9 keyframes reset all references: the GOP is closed).
        return {
            "c:v": "libvpx-vp9", "g": gop, "keyint_min": gop, "deadline": "realtime", "cpu-used": 8,
            "row-mt": 1, "crf": 30, "b:v": 0, "lag-in-frames": 0, "threads": 1,
        }
    if codec == "h264":
        return {
            "c:v": "libx264", "preset": "veryfast", "crf": 20, "g": gop, "keyint_min": gop,
            "sc_threshold": 0, "flags": "+cgop", "threads": 1, "movflags": "+faststart",
        }
    if codec == "mjpeg":
        return {"c:v": "mjpeg", "q:v": 3, "strict": -1, "threads": 1}  # -strict -1: limited-range yuv420p
    raise ValueError(f"unknown codec {codec!r}")


def transcode_command(src: Path, dst: Path, *, size: tuple[int, int], fps: Fraction, codec: str, gop: int,
                      trim: tuple[int, int] | None = None) -> list[str]:
    """The ffmpeg command line that re-encodes the first video stream of ``src`` into ``dst``:
    rotation applied (ffmpeg's autorotate), scaled to ``size`` with square pixels, constant ``fps``,
    8-bit 4:2:0, no audio/subtitles/data/metadata. ``codec``: a key of :data:`CODECS`, or ``"ffv1"``
    (the lossless intermediate segments are cut from).

    ``trim=(start, end)`` keeps frames ``start..end-1`` of the constant-rate sequence.
    """
    out = _output(src, dst, size=size, fps=fps, codec=codec, gop=gop, trim=trim)
    return out.global_args("-nostdin", "-v", "error").overwrite_output().compile()


def transcode_many_command(jobs: list[tuple[Path, Path, dict]]) -> list[str]:
    """One ffmpeg command line doing every ``(src, dst, transcode_command keyword arguments)`` of ``jobs``:
    each output is encoded from its own input by its own single-threaded encoder and muxer, so its bytes
    are those :func:`transcode_command` writes (``tests/test_preprocess.py`` checks it)."""
    outputs = [_output(src, dst, **kwargs) for src, dst, kwargs in jobs]
    return ffmpeg.merge_outputs(*outputs).global_args("-nostdin", "-v", "error").overwrite_output().compile()


def _output(src: Path, dst: Path, *, size: tuple[int, int], fps: Fraction, codec: str, gop: int,
            trim: tuple[int, int] | None = None):
    """The ffmpeg-python output node of :func:`transcode_command`."""
    video = ffmpeg.input(_url(src)).video
    video = video.filter("scale", size[0], size[1]).filter("setsar", 1).filter("fps", fps=str(fps))
    if trim is not None:
        video = video.filter("trim", start_frame=trim[0], end_frame=trim[1]).filter("setpts", "PTS-STARTPTS")
    video = video.filter("format", "yuv420p")
    args = encoder_args(codec, gop) if codec in CODECS else {"c:v": "ffv1", "level": 3, "threads": 1}
    return ffmpeg.output(video, _url(dst), an=None, sn=None, dn=None, map_metadata=-1, map_chapters=-1,
                         fps_mode="cfr", **args)


def die_with_parent() -> None:
    """Linux: ask the kernel to SIGKILL this process when its parent dies (no orphaned workers or
    ffmpeg processes after the builder is killed). A no-op elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


_PR_SET_PDEATHSIG = 1
#: Set in pool workers (single-threaded, so ``preexec_fn`` is safe there): ffmpeg dies with its worker.
FFMPEG_DIES_WITH_PARENT = False
#: Set in pool workers: a semaphore, shared by the pool, held while an ffmpeg transcode runs. The pool may
#: have one process more than the semaphore's count (``--workers``, see ``pool.pool_size``), so while the
#: transcodes run, the spare process validates (decodes) a finished output on an otherwise idle core.
TRANSCODE_SLOTS = None


def transcode(src: Path, dst: Path, **kwargs) -> None:
    """Run :func:`transcode_command`. Any error-level message (a truncated or garbled source: "partial
    file", "File ended prematurely", "Invalid NAL unit size"...) rejects the input even if ffmpeg exits 0."""
    run_ffmpeg(transcode_command(src, dst, **kwargs), dst)


def run_ffmpeg(command: list[str], dst) -> None:
    """Run an ffmpeg ``command`` writing ``dst`` (named in errors) while holding a transcode slot; raise
    ``_Reject`` on a failure or any error-level message, ``OSError`` if the output disk is full."""
    with TRANSCODE_SLOTS if TRANSCODE_SLOTS is not None else contextlib.nullcontext():
        # a session of its own: a Ctrl-C at the terminal goes to the builder, which lets running transcodes
        # finish, instead of killing ffmpeg mid-file (that exit would read as a failed, rejected input)
        proc = subprocess.run(command, capture_output=True, start_new_session=True,
                              preexec_fn=die_with_parent if FFMPEG_DIES_WITH_PARENT else None)
    lines = [re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\] ", "", ln.strip())
             for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    full = next((ln for ln in lines if "No space left on device" in ln or "File too large" in ln), None)
    if full:  # the output disk, not the source: fail the run (a rerun redoes it) instead of rejecting the video
        raise OSError(errno.ENOSPC, f"ffmpeg could not write {dst}: {full}")
    if proc.returncode != 0:
        raise _Reject(f"ffmpeg failed: {lines[-1] if lines else f'exit status {proc.returncode}'}", "transcode")
    if lines:
        raise _Reject(f"damaged source, decoding reported errors: {lines[0]}", "transcode")


def decode_check(path: Path) -> tuple[dict, int]:
    """Decode every frame of a stored file with PyAV (the library the loaders use).

    Returns the stream's properties and the exact number of decoded frames; raises ``_Reject`` if the
    file holds anything but one video stream or any packet fails to decode.
    """
    try:
        with av.open(str(Path(path).absolute()), metadata_errors="replace") as container:  # non-UTF-8 tags are common
            if len(container.streams) != 1 or not container.streams.video:
                raise _Reject(f"re-encoded file has {len(container.streams)} streams, expected one video stream", "validate")
            stream = container.streams.video[0]
            # one decoding thread: libavcodec's default thread pool costs about 35% more CPU on these small
            # streams (76 vs 57 ms for a 190-frame clip at 170x128), CPU the transcodes in the other workers need
            stream.thread_type = "NONE"
            props = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                     "width": stream.codec_context.width, "height": stream.codec_context.height, "rotation": 0}
            frames = 0
            for frame in container.decode(stream):
                if frames == 0:
                    props["rotation"] = int(getattr(frame, "rotation", 0) or 0)
                frames += 1
    except av.FFmpegError as err:
        raise _Reject(f"re-encoded video does not decode cleanly: {err}", "validate") from None
    return props, frames


def validate_output(path: Path, *, codec: Codec, size: tuple[int, int], min_frames: int) -> int:
    """Decode the stored file and check what the loaders rely on. Returns the exact frame count."""
    props, frames = decode_check(path)
    found = (props["codec"], props["pix_fmt"], props["width"], props["height"])
    expected = (codec.ffmpeg_codec, "yuv420p", size[0], size[1])
    if found != expected:
        raise _Reject(f"re-encoded stream is {found}, expected {expected}", "validate")
    if props["rotation"]:
        raise _Reject("re-encoded stream still carries rotation metadata", "validate")
    if frames < min_frames:
        raise _Reject(f"too short: {frames} frames < --min-frames {min_frames}", "validate")
    return frames


def plan_segments(frames: int, max_frames: int) -> list[tuple[int, int]]:
    """Balanced consecutive ``(start, end)`` segments of at most ``max_frames`` frames covering ``frames``.

    ``ceil(frames / max_frames)`` segments of near-equal length (each > ``max_frames / 2`` when split),
    so no short tail is left over.
    """
    count = max(1, math.ceil(frames / max_frames))
    bounds = [i * frames // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def process_video(src: Path, staging: Path, key: str, params: EncodeParams) -> list[Segment] | Rejection:
    """Transcode one source into ``staging/<key>*.<ext>``; never raises for a bad input.

    Files are written under temporary names and renamed when complete.
    """
    codec = CODECS[params.codec]
    made: list[Path] = []
    try:
        size, fps = _output_plan(src, params)
        if params.max_frames is None:
            tmp = _temporary(staging, key, codec.ext)
            made.append(tmp)
            transcode(src, tmp, size=size, fps=fps, codec=params.codec, gop=params.gop)
            return [_store(tmp, staging / f"{key}.{codec.ext}", codec, size, fps, params.min_frames)]

        # Segments: normalize once into a lossless intermediate, count its frames by decoding,
        # then cut balanced segments from it (one lossy generation, exact frame indices).
        inter = _temporary(staging, key, "ffv1.mkv")
        made.append(inter)
        transcode(src, inter, size=size, fps=fps, codec="ffv1", gop=1)
        _props, total = decode_check(inter)
        if total < params.min_frames:
            raise _Reject(f"too short: {total} frames < --min-frames {params.min_frames}", "validate")
        segments = []
        for index, (start, end) in enumerate(plan_segments(total, params.max_frames)):
            name = f"{key}_s{start:06d}"
            tmp = _temporary(staging, name, codec.ext)
            made.append(tmp)
            transcode(inter, tmp, size=size, fps=fps, codec=params.codec, gop=params.gop, trim=(start, end))
            segment = _store(tmp, staging / f"{name}.{codec.ext}", codec, size, fps, 1, index=index, start=start)
            made[-1] = staging / segment.file
            if segment.frames != end - start:
                raise _Reject(f"segment {index} decodes to {segment.frames} frames, expected {end - start}", "validate")
            segments.append(segment)
        inter.unlink()
        return segments
    except Exception as err:  # a batch never dies on one file: anything unexpected is a rejection too
        return _rejection(err, made)


def process_videos(items: list[tuple[Path, str]], staging: Path, params: EncodeParams) -> list[list[Segment] | Rejection]:
    """:func:`process_video` of each ``(src, key)`` of ``items``, with one ffmpeg process for all their
    transcodes. Same outcomes and same bytes; what it saves is ffmpeg's start-up, which is paid per
    process (about 0.1 s of CPU for the distribution's ffmpeg on this project's machines, a fifth of a
    5-10 s clip's transcode to 128 px). If the joint transcode fails or reports any error, every input of
    the group is transcoded again alone, so a bad input is judged exactly as :func:`process_video` would.
    Segmented outputs (``max_frames``) always go one by one."""
    if params.max_frames is not None or len(items) < 2:
        return [process_video(src, staging, key, params) for src, key in items]
    codec = CODECS[params.codec]
    outcomes: dict[str, list[Segment] | Rejection] = {}
    jobs = []  # (src, key, size, fps, tmp)
    for src, key in items:
        try:
            jobs.append((src, key, *_output_plan(src, params), _temporary(staging, key, codec.ext)))
        except Exception as err:
            outcomes[key] = _rejection(err, [])
    if jobs:
        try:
            kwargs = {"codec": params.codec, "gop": params.gop}
            run_ffmpeg(transcode_many_command([(src, tmp, {"size": size, "fps": fps, **kwargs}) for src, _, size, fps, tmp in jobs]),
                       ", ".join(str(tmp) for *_, tmp in jobs))
            joint = True
        except Exception as err:
            for *_, tmp in jobs:
                tmp.unlink(missing_ok=True)
            if _disk_full(err):
                raise
            joint = False
        for src, key, size, fps, tmp in jobs:
            if not joint:
                outcomes[key] = process_video(src, staging, key, params)
                continue
            try:
                outcomes[key] = [_store(tmp, staging / f"{key}.{codec.ext}", codec, size, fps, params.min_frames)]
            except Exception as err:
                outcomes[key] = _rejection(err, [tmp])
    return [outcomes[key] for _, key in items]


def _temporary(staging: Path, name: str, ext: str) -> Path:
    """Where an output named ``name.ext`` is written before it is complete (this process's own name)."""
    return staging / f"{name}.tmp{os.getpid()}.{ext}"


def _output_plan(src: Path, params: EncodeParams) -> tuple[tuple[int, int], Fraction]:
    """(output size, output frame rate) of ``src`` after probing it; ``_Reject`` if it is not a usable video."""
    source = check_source(src)
    fps = Fraction(params.fps).limit_denominator(1001) if params.fps else source.rate
    if fps is None:
        raise _Reject("source has no usable frame rate", "probe")
    return output_size(source, params.short_side), fps


def _store(tmp: Path, final: Path, codec: Codec, size: tuple[int, int], fps: Fraction, min_frames: int, *,
           index: int = 0, start: int = 0) -> Segment:
    """Validate the transcoded ``tmp`` by decoding it, then rename it to ``final`` (the output is complete)."""
    frames = validate_output(tmp, codec=codec, size=size, min_frames=min_frames)
    os.replace(tmp, final)
    return Segment(final.name, index, start, frames, size[0], size[1], float(fps), str(fps), final.stat().st_size)


def _disk_full(err: Exception) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _rejection(err: Exception, made: list[Path]) -> Rejection:
    """Delete the files in ``made`` and return the Rejection for ``err``; re-raise it if the output disk is
    full (not the video's fault: the run fails and a rerun redoes it)."""
    for path in made:
        path.unlink(missing_ok=True)
    if _disk_full(err):
        raise err
    if isinstance(err, _Reject):
        return err.rejection
    return Rejection(_one_line(f"unexpected error: {type(err).__name__}: {err}"), "transcode")
