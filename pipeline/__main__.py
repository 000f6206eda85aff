"""``python -m pipeline {preview,bench}``: look at what the loader produces; measure how fast it is."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline.config import ClipConfig, LoaderConfig
from pipeline.remote import RemoteOptions, add_remote_arguments, remote_options
from pipeline.shards import list_shards


def _add_clip_args(p: argparse.ArgumentParser) -> None:
    """The shard selection and the clip settings, with :class:`ClipConfig`'s defaults."""
    p.add_argument("shards", nargs="*", help="shard tars or URLs, or one OUT folder (path or URL) of preprocess (its manifest lists the tars)")
    p.add_argument("--split", default="train", help="split to read when SHARDS is an OUT folder")
    p.add_argument("--mode", choices=("pretext", "train", "eval"), default="pretext")
    p.add_argument("--num-frames", type=int, default=ClipConfig.num_frames, help="T, frames per clip")
    p.add_argument("--num-clips", type=int, default=ClipConfig.num_clips, help="K, clips per video in pretext mode")
    p.add_argument("--speeds", type=int, nargs="+", default=list(ClipConfig.speeds), help="signed speed set")
    p.add_argument("--resize", type=int, default=ClipConfig.resize, help="short side before cropping, pixels")
    p.add_argument("--crop-size", type=int, default=ClipConfig.crop_size, help="output height = width, pixels")
    p.add_argument("--seed", type=int, default=0)
    add_remote_arguments(p)


def _config(args, **extra) -> LoaderConfig:
    return LoaderConfig(mode=args.mode, num_frames=args.num_frames, num_clips=args.num_clips, speeds=tuple(args.speeds),
                        resize=args.resize, crop_size=args.crop_size, seed=args.seed, **extra)


def _shards(args, remote: RemoteOptions) -> list[str]:
    if not args.shards:
        raise SystemExit("give SHARDS (tar files or an OUT folder)")
    return list_shards(args.shards[0] if len(args.shards) == 1 else args.shards, split=args.split, remote=remote)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("preview", help="write DIR/clips.npz and DIR/preview.png for the first N samples")
    _add_clip_args(p)
    p.add_argument("--backend", choices=("dali", "reference"), default="reference")
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--no-augment", action="store_true", help="resize the whole frame to the output size: no crop, no flip")
    p.add_argument("--out", type=Path, required=True)

    b = sub.add_parser("bench", help="clips/s of both backends, per-clip peers and the decode limit (see BENCHMARKS.md)")
    _add_clip_args(b)
    b.add_argument("--samples", type=int, default=36, help="samples timed per method and setting")
    b.add_argument("--workers", type=int, default=1, help="reference worker processes / DALI CPU threads")
    b.add_argument("--repeats", type=int, default=3, help="rounds per setting (every method once per round); medians are reported")
    b.add_argument("--per-speed", action="store_true", help="also time single clips at each speed |s| (for the plot)")
    b.add_argument("--compare-codecs", type=Path, metavar="WORKDIR",
                   help="build vp9 GOP 16, vp9 GOP 250 and mjpeg shards from the embedded footage in WORKDIR and time each "
                        "(SHARDS then optional); the first set is the headline result")
    b.add_argument("--sets", type=Path, metavar="WORKDIR",
                   help="build the footage and a longer frame-numbered set (130-400 frames) in WORKDIR and measure the targets "
                        "on both: every method at 1 worker, the loaders' 2-worker / 1-worker scaling (SHARDS then optional)")
    b.add_argument("--lengths", type=Path, metavar="WORKDIR",
                   help="build one scene cut to 100, 300, 1000 and 3000 frames in WORKDIR and time the reference backend's "
                        "per-sample cost on each (SHARDS then optional)")
    b.add_argument("--out", type=Path, help="write the results as JSON")
    b.add_argument("--plot", type=Path, help="write a PNG of clips/s per method and speed")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    remote = remote_options(args)
    if args.command == "preview":
        from pipeline.preview import preview

        cfg = _config(args, batch_size=1, augment=not args.no_augment, shuffle=True)
        data = preview(_shards(args, remote), cfg, backend=args.backend, num_samples=args.num_samples, out=args.out, remote=remote)
        print(f"wrote {args.out / 'clips.npz'} (clips {data['clips'].shape}, backend {data['backend']}) and {args.out / 'preview.png'}")
    else:
        from pipeline import bench

        cfg = _config(args, batch_size=4)
        if args.sets or args.lengths:
            result = {}
            if args.sets:
                result["sets"] = bench.compare_sets(args.sets, cfg, samples=args.samples, repeats=args.repeats)
            if args.lengths:
                result["per_sample_vs_length"] = bench.per_sample_vs_length(bench.length_sets(args.lengths), cfg, samples=args.samples,
                                                                            repeats=args.repeats)
            print(json.dumps(result, indent=2))
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(result, indent=2) + "\n")
            return
        if args.compare_codecs:
            result = bench.compare_codecs(args.compare_codecs, cfg, samples=args.samples, workers=args.workers, per_speed=args.per_speed,
                                           repeats=args.repeats)
        else:
            result = bench.run_all(_shards(args, remote), cfg, samples=args.samples, workers=args.workers, per_speed=args.per_speed,
                                   repeats=args.repeats, remote=remote)
        print(bench.table(result))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        if args.plot:
            bench.plot(result, args.plot)


if __name__ == "__main__":
    main()
