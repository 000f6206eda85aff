"""Inputs and inspection helpers for the preprocess tests: tiny videos (good and bad), ffprobe, tar reading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from synthetic.videos import write_lavfi_video, write_numbered_video


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def write_rotated(path: Path, *, num_frames: int, rotate: int = 90) -> Path:
    """A numbered 176x128 mp4 carrying display-matrix rotation (like a phone video shot in portrait)."""
    plain = path.with_name(path.stem + ".plain.mp4")
    write_numbered_video(plain, num_frames=num_frames)
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v", f"rotate={rotate}", str(path))
    plain.unlink()
    return path


def write_vfr(path: Path, *, num_frames: int = 40) -> Path:
    """Variable frame rate: 25 fps for 20 frames, then 12.5 fps."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=176x128:rate=25", "-frames:v", str(num_frames),
           "-vf", "setpts='if(lt(N,20),N/25,0.8+(N-20)/12.5)/TB'", "-fps_mode", "passthrough", "-c:v", "libx264", str(path))
    return path


def write_audio_only(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(path))
    return path


def write_still(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=176x128:rate=25", "-frames:v", "1", str(path))
    return path


def write_truncated(path: Path, *, faststart: bool) -> Path:
    """A numbered mp4 cut at 60% of its size: without faststart the index (moov) is lost, with it the data is."""
    full = path.with_name(path.stem + ".full.mp4")
    write_numbered_video(full, num_frames=50, extra_output_args={"movflags": "+faststart"} if faststart else None)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    full.unlink()
    return path


def write_garbled(path: Path) -> Path:
    """A valid mkv whose first kilobytes (the container header) are overwritten with noise."""
    write_lavfi_video(path, num_frames=30)
    data = bytearray(path.read_bytes())
    data[: min(4096, len(data) // 2)] = np.random.default_rng(0).integers(0, 256, min(4096, len(data) // 2), dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


#: Rejected inputs of :func:`make_corpus`: relative path -> (reason prefix, stage).
BAD = {
    "dog/empty.mp4": ("empty file", "input"),
    "dog/not a video.bin": ("not a readable video container", "probe"),
    "dog/sound.m4a": ("audio only", "probe"),
    "dog/still.png": ("still image, not a video", "probe"),
    "dog/short.mp4": ("too short", "validate"),
    "dog/truncated.mp4": ("not a readable video container", "probe"),
    "dog/truncated_faststart.mp4": ("damaged source", "transcode"),
    "dog/garbled.mkv": ("not a readable video container", "probe"),
    "unlabelled.mp4": ("unlabelled: not inside a class folder", "input"),
}

#: Accepted inputs of :func:`make_corpus`: relative path -> (decodable frames after preprocessing or None
#: when not fixed by construction, numbered?, display (width, height) of the source).
GOOD = {
    "cat/numbered.mp4": (40, True, (176, 128)),
    "cat/odd dims 444.mkv": (30, True, (175, 99)),
    "cat/-leading dash.webm": (20, False, (176, 128)),
    "cat/it's \"quoted\" ü.avi": (24, False, (176, 128)),
    "dog/rotated.mp4": (36, False, (128, 176)),
    "dog/ten bit.mov": (20, False, (176, 128)),
    "dog/vfr.mp4": (None, False, (176, 128)),
}


def make_corpus(root: Path) -> Path:
    """A labelled folder (cat/, dog/) with every kind of good and bad input, plus non-inputs."""
    write_numbered_video(root / "cat/numbered.mp4", num_frames=40)
    write_numbered_video(root / "cat/odd dims 444.mkv", num_frames=30, width=175, height=99, pix_fmt="yuv444p")
    write_lavfi_video(root / "cat/-leading dash.webm", num_frames=20, vcodec="libvpx-vp9")
    write_lavfi_video(root / "cat/it's \"quoted\" ü.avi", num_frames=24, vcodec="mpeg4")
    write_rotated(root / "dog/rotated.mp4", num_frames=36)
    write_lavfi_video(root / "dog/ten bit.mov", num_frames=20, pix_fmt="yuv420p10le")
    write_vfr(root / "dog/vfr.mp4")
    (root / "dog/empty.mp4").write_bytes(b"")
    (root / "dog/not a video.bin").write_bytes(b"hello, I am not a video\n" * 50)
    write_audio_only(root / "dog/sound.m4a")
    write_still(root / "dog/still.png")
    write_lavfi_video(root / "dog/short.mp4", num_frames=10)
    write_truncated(root / "dog/truncated.mp4", faststart=False)
    write_truncated(root / "dog/truncated_faststart.mp4", faststart=True)
    write_garbled(root / "dog/garbled.mkv")
    write_lavfi_video(root / "unlabelled.mp4", num_frames=20)
    (root / "notes.txt").write_text("sidecar: not an input\n")
    (root / "dog/labels.json").write_text("{}")
    write_lavfi_video(root / ".hidden.mp4", num_frames=20)
    return root


# --------------------------------------------------------------------------------------------- inspection


def read_samples(tar_paths) -> dict[str, dict[str, bytes]]:
    """All samples of the given tars: key -> {ext: bytes}."""
    samples: dict[str, dict[str, bytes]] = {}
    for tar_path in tar_paths:
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def shard_keys(tar_paths) -> dict[str, str]:
    """key -> shard file name."""
    return {key: Path(p).name for p in tar_paths for key in read_samples([p])}


def ffprobe(path: Path, *extra: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", *extra, str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def count_frames(path: Path) -> int:
    """``ffprobe -count_frames``: frames counted by decoding."""
    return int(ffprobe(path, "-count_frames", "-select_streams", "v:0")["streams"][0]["nb_read_frames"])


def keyframe_indices(path: Path) -> list[int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=key_frame",
                          "-of", "csv=p=0", str(path)], check=True, capture_output=True, text=True).stdout
    return [i for i, flag in enumerate(out.split()) if flag.strip(",") == "1"]


def decode_frames(path: Path) -> np.ndarray:
    """Every frame as RGB, ``(N, H, W, 3)`` uint8, decoded with PyAV."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def dali_cpu_decode(data: bytes) -> np.ndarray:
    """Every frame of an encoded video, ``(F, H, W, 3)`` uint8, from DALI's CPU video decoder."""
    from nvidia.dali import fn, pipeline_def, types

    encoded = np.frombuffer(data, dtype=np.uint8)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        return fn.decoders.video(fn.external_source(source=lambda: [encoded], batch=True, dtype=types.UINT8), device="cpu")

    p = pipe()
    p.build()
    (frames,) = p.run()
    return np.asarray(frames[0])


def is_cfr(stream: dict) -> bool:
    return Fraction(stream["r_frame_rate"]) == Fraction(stream["avg_frame_rate"])


def crashing_task(items: list[tuple[str, str]], staging: str, params) -> int:
    """Stand-in for ``preprocess.pool._transcode_task`` (patched in the parent, imported by spawned
    workers) whose worker process dies by SIGKILL on a group holding an input named ``*crash*``, like a
    decoder segfault."""
    from preprocess.pool import _transcode_task

    if any("crash" in Path(src).name for src, _ in items):
        for _, key in items:
            (Path(staging) / f"{key}.started").touch()  # the real task's in-flight markers
        os.kill(os.getpid(), signal.SIGKILL)
    return _transcode_task(items, staging, params)
