"""``preprocess SRC OUT``: the command-line front end of :func:`preprocess.build_shards`."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from .build import EXECUTORS, BuildResult, PreprocessError, build_shards
from .datasets import DATASETS, read_dataset
from .partition import merge_partitions, parse_partition, part_dir
from .media import CODECS


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="preprocess",
        description=(
            "Re-encode videos into WebDataset shards for training: constant frame rate, 8-bit yuv420p, no audio, "
            "rotation applied, short side resized, closed GOPs. Writes OUT/shards/{split}-NNNNNN.tar + .idx (DALI index), "
            "OUT/manifest.json and OUT/rejects.jsonl. Bad inputs are rejected with a reason, never fatal. "
            "Safe to kill: rerunning the same command resumes where it stopped."
        ),
        epilog=(
            "SRC is a folder (searched recursively; every file except hidden ones and sidecars such as .txt/.json/.csv/.srt "
            "is an input) or a .csv/.tsv list of 'path,label' rows with paths relative to the list file. "
            "Exit status: 0 if at least one video was written (with --strict: and nothing rejected), "
            "1 otherwise, 2 for an unusable SRC/OUT or conflicting parameters. "
            "With --dataset, SRC is the dataset's ROOT as it unpacks and every split of the official files is written "
            "(train and test; Kinetics also val), labelled with the official class indices (docs/reproduce.md). "
            "`preprocess --merge OUT [--split NAME]` merges the partitions written by --partition into OUT/manifest.json "
            "(see docs/scale-out.md)."
        ),
    )
    p.add_argument("src", metavar="SRC", type=Path, help="folder of videos, or CSV/TSV list of 'path,label' rows")
    p.add_argument("out", metavar="OUT", type=Path, help="output folder (created if missing; several splits can share it)")
    p.add_argument("--split", metavar="NAME", default="train",
                   help="split name (letters, digits, _): shard names start with it; the manifest keeps one entry per split (default: train)")
    p.add_argument("--labels-from-dirs", action="store_true",
                   help="label = name of the top-level folder under SRC holding the video (files directly in SRC are rejected)")
    p.add_argument("--short-side", metavar="PX", type=int, default=128,
                   help="output short side in pixels, even; aspect kept, long side rounded to even (default: 128)")
    p.add_argument("--fps", type=float, default=None, help="output constant frame rate (default: the source's rate, made constant)")
    p.add_argument("--codec", choices=sorted(CODECS), default="vp9",
                   help="vp9: VP9 in .mp4, decodable by DALI CPU and GPU (default); h264: in .mp4, not by DALI's CPU decoder; "
                        "mjpeg: all-intra, in .avi")
    p.add_argument("--gop", metavar="N", type=_positive, default=16, help="keyframe interval in frames, closed GOP; ignored by mjpeg (default: 16)")
    p.add_argument("--max-frames", metavar="N", type=_positive, default=None,
                   help="cut longer videos into balanced consecutive segments of at most N frames, one sample each "
                        "(N >= 2 x --min-frames; default: off)")
    p.add_argument("--min-frames", metavar="N", type=_positive, default=16,
                   help="reject videos with fewer decodable frames after normalization (default: 16)")
    p.add_argument("--workers", metavar="N", type=_positive, default=None, help="ffmpeg transcodes at a time (default: all CPU cores); one more process validates outputs meanwhile")
    p.add_argument("--shard-max-count", metavar="N", type=_positive, default=1000, help="at most N samples per shard (default: 1000)")
    p.add_argument("--shard-max-bytes", metavar="N", type=_positive, default=1 << 30,
                   help="at most N bytes per shard tar; a larger single sample gets its own shard (default: 1 GiB)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle that assigns samples to shards (default: 0)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if any input was rejected (shards are still written)")
    p.add_argument("--label-map", metavar="FILE", type=Path, default=None,
                   help="JSON file {name: int} forcing the label map (inputs with other labels are rejected)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="SRC is this dataset's official layout: UCF-101/ + ucfTrainTestlist/ (ucf101), class folders + "
                        "testTrainMulti_7030_splits/ (hmdb51), annotation CSVs + videos (kinetics); writes all its splits "
                        "(not with --split, --labels-from-dirs, --label-map)")
    p.add_argument("--split-id", metavar="N", type=int, default=1,
                   help="with --dataset: the official split, 1-3 for ucf101 and hmdb51 (default: 1)")
    scale = p.add_argument_group("beyond one machine (docs/scale-out.md)")
    scale.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: a process pool here (default); ray: one Ray task per video on a Ray cluster (the ray extra)")
    scale.add_argument("--ray-address", metavar="ADDR", default=None,
                       help="Ray cluster to join, e.g. HEAD_IP:6379 (default: RAY_ADDRESS, else a local Ray instance)")
    scale.add_argument("--partition", metavar="I/N", default=None,
                       help="process only partition I of N of the inputs (by a stable hash of their path) into OUT/parts/I-of-N/; "
                            "'auto' reads I and N from SLURM_ARRAY_TASK_ID/COUNT, JOB_COMPLETION_INDEX/JOB_COMPLETIONS or RANK/WORLD_SIZE. "
                            "Then run `preprocess --merge OUT`")
    return p


def merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="preprocess --merge", description=(
        "Check that all N partitions under OUT/parts/ (written by `preprocess SRC OUT --partition I/N`) are complete and "
        "consistent (same parameters, inputs and label map), then write OUT/manifest.json and OUT/rejects.jsonl for the split."))
    p.add_argument("--merge", metavar="OUT", type=Path, required=True, help="the OUT folder the partitions were written to")
    p.add_argument("--split", metavar="NAME", default="train", help="split to merge (default: train)")
    return p


def merge_main(argv: list[str]) -> int:
    args = merge_parser().parse_args(argv)
    try:
        entry = merge_partitions(args.merge, args.split)
    except PreprocessError as err:
        print(f"preprocess: error: {err}", file=sys.stderr)
        return 2
    print(f"merged {entry['partitions']} partitions of split {args.split!r}: {entry['samples']} samples from "
          f"{entry['videos']} of {entry['inputs']} inputs ({entry['rejected']} rejected), {len(entry['shards'])} shards, "
          f"{entry['frames']:,} frames -> {args.merge / 'manifest.json'}", file=sys.stderr)
    return 0


def _load_label_map(path: Path | None) -> dict[str, int] | None:
    if path is None:
        return None
    try:
        mapping = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PreprocessError(f"--label-map {path}: {err}") from None
    if not isinstance(mapping, dict):
        raise PreprocessError(f"--label-map {path}: expected a JSON object {{name: int}}")
    return mapping


def _summary(result: BuildResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"preprocess: split {result.split!r}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    accounted = result.videos_written + len(result.rejected)
    check = "ok" if accounted == result.inputs else "MISMATCH"
    table.add_row("inputs", str(result.inputs))
    table.add_row("videos written", str(result.videos_written))
    table.add_row("samples written", str(result.written))
    table.add_row("rejected", str(len(result.rejected)))
    for reason, count in Counter(r["reason"].split(":")[0] for r in result.rejected).most_common():
        table.add_row(f"  {reason}", str(count))
    table.add_row("written + rejected = inputs", f"{result.videos_written} + {len(result.rejected)} = {accounted} ({check})")
    table.add_row("shards", str(len(result.shards)))
    table.add_row("total frames", f"{result.total_frames:,}")
    table.add_row("total bytes", f"{result.total_bytes:,}")
    table.add_row("wall time", f"{result.wall_s:.1f} s" + (" (already complete: nothing to do)" if result.already_complete else ""))
    console = Console(stderr=True)
    console.print(table)
    console.print(f"manifest: {result.manifest_path}", soft_wrap=True)


def _jobs(args: argparse.Namespace) -> list[dict]:
    """One ``build_shards`` call's split, inputs and label map per split to write."""
    if args.dataset is None:
        if args.split_id != 1:
            raise PreprocessError("--split-id needs --dataset")
        return [{"split": args.split, "labels_from_dirs": args.labels_from_dirs, "label_map": _load_label_map(args.label_map)}]
    clash = [flag for flag, used in (("--split", args.split != "train"), ("--labels-from-dirs", args.labels_from_dirs),
                                     ("--label-map", args.label_map is not None)) if used]
    if clash:
        raise PreprocessError(f"--dataset sets the splits and labels itself; drop {', '.join(clash)}")
    official = read_dataset(args.dataset, args.src, split_id=args.split_id)
    print(f"preprocess: {official.describe()}", file=sys.stderr)
    return [{"split": name, "inputs": items, "label_map": official.label_map} for name, items in official.splits.items()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--merge" or a.startswith("--merge=") for a in argv):
        return merge_main(argv)
    args = parser().parse_args(argv)
    results = []
    try:
        out, partition = args.out, None
        if args.partition is not None:
            partition = parse_partition(args.partition)
            out = part_dir(args.out, partition)
        for job in _jobs(args):
            results.append(build_shards(
                args.src, out, short_side=args.short_side, fps=args.fps, codec=args.codec, gop=args.gop,
                max_frames=args.max_frames, min_frames=args.min_frames, workers=args.workers,
                shard_max_count=args.shard_max_count, shard_max_bytes=args.shard_max_bytes, seed=args.seed,
                strict=args.strict, progress=not args.no_progress, executor=args.executor, ray_address=args.ray_address,
                partition=partition, **job,
            ))
            _summary(results[-1])
    except PreprocessError as err:
        print(f"preprocess: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("preprocess: interrupted; finished work is kept: rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as err:  # e.g. OUT's disk is full: finished work is kept, a rerun continues
        print(f"preprocess: error: {err} (nothing incomplete was published; rerun the same command to continue)", file=sys.stderr)
        return 2
    status = 0
    for result in results:
        if result.written == 0:
            print(f"preprocess: error: split {result.split!r}: no video was written (see rejects.jsonl)", file=sys.stderr)
            status = 1
        elif args.strict and result.rejected:
            print(f"preprocess: --strict: split {result.split!r}: {len(result.rejected)} inputs rejected (see rejects.jsonl)", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
