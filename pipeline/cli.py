"""``python -m pipeline preview``: look at what the loader produces (its speed is measured by ``python -m bench loader``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from pipeline.cli_syntax import LIST_METAVAR, ArgumentParser, int_list, naming_options, show_list
from pipeline.config import ClipConfig, LoaderConfig
from pipeline.io.remote import RemoteOptions, add_remote_arguments, remote_options
from pipeline.io.shard_reader import list_shards
from pipeline.routing import BACKENDS


def add_clip_arguments(p: argparse.ArgumentParser) -> None:
    """The shard selection and the clip settings, with :class:`ClipConfig`'s defaults (lists: ``--speeds -8,-4,4,8``)."""
    p.add_argument("shards", nargs="*", help="shard tars or URLs, or one OUT folder (path or URL) of preprocess (its manifest lists the tars)")
    p.add_argument("--split", default="train", help="split to read when SHARDS is an OUT folder")
    p.add_argument("--mode", choices=("pretrain", "finetune", "eval"), default="pretrain", help="what a sample holds (docs/pipeline.md)")
    p.add_argument("--num-frames", type=int, default=ClipConfig.num_frames, help="T, frames per clip")
    p.add_argument("--num-clips", type=int, default=ClipConfig.num_clips, help="K, clips per video in pretrain mode")
    p.add_argument("--speeds", type=int_list, metavar=LIST_METAVAR, default=show_list(ClipConfig.speeds),
                   help="signed speed set, comma-separated (negative = reversed)")
    p.add_argument("--resize", type=int, default=ClipConfig.resize, help="short side before cropping, pixels")
    p.add_argument("--crop-size", type=int, default=ClipConfig.crop_size, help="output height = width, pixels")
    p.add_argument("--seed", type=int, default=0, help="root of every random draw (speeds, starts, crops, order)")
    add_remote_arguments(p)


def loader_config(args, **extra) -> LoaderConfig:
    return LoaderConfig(mode=args.mode, num_frames=args.num_frames, num_clips=args.num_clips, speeds=tuple(args.speeds),
                        resize=args.resize, crop_size=args.crop_size, seed=args.seed, **extra)


def shard_paths(args, remote: RemoteOptions) -> list[str]:
    if not args.shards:
        raise SystemExit("give SHARDS (tar files or an OUT folder)")
    return list_shards(args.shards[0] if len(args.shards) == 1 else args.shards, split=args.split, remote=remote)


def build_parser() -> argparse.ArgumentParser:
    """``python -m pipeline preview SHARDS --out DIR [...]``."""
    parser = ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("preview", help="write DIR/clips.npz and DIR/preview.png for the first N samples",
                       description="Write DIR/clips.npz and DIR/preview.png for the first N samples.")
    add_clip_arguments(p)
    p.add_argument("--backend", choices=BACKENDS, default="reference", help="loader backend")
    p.add_argument("--num-samples", type=int, default=4, help="N, samples to preview")
    p.add_argument("--no-augment", action="store_true", help="resize the whole frame to the output size: no crop, no flip")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for clips.npz and preview.png")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        remote = remote_options(args)
        cfg = loader_config(args, batch_size=1, augment=not args.no_augment, shuffle=True)
    except ValueError as err:  # an option's value: one line naming the option, status 2
        parser.error(naming_options(str(err), (f.name for f in dataclasses.fields(ClipConfig))))
    if args.command == "preview":
        from pipeline.preview import preview

        data = preview(shard_paths(args, remote), cfg, backend=args.backend, num_samples=args.num_samples, out=args.out, remote=remote)
        print(f"wrote {args.out / 'clips.npz'} (clips {data['clips'].shape}, backend {data['backend']}) and {args.out / 'preview.png'}")

