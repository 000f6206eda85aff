"""``python -m pipeline preview``: look at what the loader produces (its speed is measured by ``python -m bench loader``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.config import ClipConfig, LoaderConfig
from pipeline.io.remote import RemoteOptions, add_remote_arguments, remote_options
from pipeline.io.shard_reader import list_shards
from pipeline.routing import BACKENDS


def add_clip_arguments(p: argparse.ArgumentParser) -> None:
    """The shard selection and the clip settings, with :class:`ClipConfig`'s defaults."""
    p.add_argument("shards", nargs="*", help="shard tars or URLs, or one OUT folder (path or URL) of preprocess (its manifest lists the tars)")
    p.add_argument("--split", default="train", help="split to read when SHARDS is an OUT folder")
    p.add_argument("--mode", choices=("pretrain", "finetune", "eval"), default="pretrain")
    p.add_argument("--num-frames", type=int, default=ClipConfig.num_frames, help="T, frames per clip")
    p.add_argument("--num-clips", type=int, default=ClipConfig.num_clips, help="K, clips per video in pretrain mode")
    p.add_argument("--speeds", type=int, nargs="+", default=list(ClipConfig.speeds), help="signed speed set")
    p.add_argument("--resize", type=int, default=ClipConfig.resize, help="short side before cropping, pixels")
    p.add_argument("--crop-size", type=int, default=ClipConfig.crop_size, help="output height = width, pixels")
    p.add_argument("--seed", type=int, default=0)
    add_remote_arguments(p)


def loader_config(args, **extra) -> LoaderConfig:
    return LoaderConfig(mode=args.mode, num_frames=args.num_frames, num_clips=args.num_clips, speeds=tuple(args.speeds),
                        resize=args.resize, crop_size=args.crop_size, seed=args.seed, **extra)


def shard_paths(args, remote: RemoteOptions) -> list[str]:
    if not args.shards:
        raise SystemExit("give SHARDS (tar files or an OUT folder)")
    return list_shards(args.shards[0] if len(args.shards) == 1 else args.shards, split=args.split, remote=remote)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("preview", help="write DIR/clips.npz and DIR/preview.png for the first N samples")
    add_clip_arguments(p)
    p.add_argument("--backend", choices=BACKENDS, default="reference")
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--no-augment", action="store_true", help="resize the whole frame to the output size: no crop, no flip")
    p.add_argument("--out", type=Path, required=True)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    remote = remote_options(args)
    if args.command == "preview":
        from pipeline.preview import preview

        cfg = loader_config(args, batch_size=1, augment=not args.no_augment, shuffle=True)
        data = preview(shard_paths(args, remote), cfg, backend=args.backend, num_samples=args.num_samples, out=args.out, remote=remote)
        print(f"wrote {args.out / 'clips.npz'} (clips {data['clips'].shape}, backend {data['backend']}) and {args.out / 'preview.png'}")

