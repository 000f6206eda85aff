"""``python -m bench remote OUT URL``: loader clips/s reading the shards of ``OUT`` from local disk
vs from ``URL`` (the same folder served over HTTP, e.g. by nginx on 127.0.0.1), and the bytes fetched per clip.

Methods, timed one after the other in each of ``--repeats`` rounds (medians reported, the remote/local ratio
as the median of the per-round ratios), each through ``bench.loader._time_loader`` (the loader's steady state,
first batch of an epoch excluded):

* ``local``: the tars on disk;
* ``remote``: the URL, no cache: one ranged request per sample's video member;
* ``remote_cached``: the URL with ``--shard-cache`` already filled by a previous epoch (no request).

Bytes fetched per clip: the video members of the timed samples over their clips (each sample's video is
one ranged read of exactly its member, which ``tests/test_remote_shards.py`` checks against nginx's log),
plus what start-up fetches once per loader (index files and every sample's json), over the clips of one epoch.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
from pathlib import Path

import torch

from bench.loader import _time_loader
from pipeline.cli_syntax import ArgumentParser
from pipeline.config import LoaderConfig
from pipeline.routing import BACKENDS
from pipeline.io.remote import RemoteOptions, add_remote_arguments, remote_options, sibling
from pipeline.io.shard_reader import list_shards, scan_shards


def run(out_dir: str, url: str, cfg: LoaderConfig, *, backend: str, samples: int, workers: int, repeats: int,
        remote: RemoteOptions) -> dict:
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.set_num_threads(1)
    local = list_shards(out_dir)
    remote_shards = list_shards(url, remote=remote)
    records = {r.key: r for r in scan_shards(local)[0]}
    rounds = []
    with tempfile.TemporaryDirectory() as cache:
        cached = dataclasses.replace(remote, cache_dir=cache)
        _time_loader(remote_shards, cfg, backend, samples, workers, cached)  # fills the cache
        for _ in range(repeats):
            rates, timed = {}, None
            for name, shards, options in (("local", local, None), ("remote", remote_shards, remote),
                                          ("remote_cached", remote_shards, cached)):
                rates[name], timed = _time_loader(shards, cfg, backend, samples, workers, options)
            rounds.append(rates)
    video_bytes = sum(records[key].members[records[key].video_ext][1] for _, key in timed)
    startup_bytes = sum(Path(sibling(s, ".idx")).stat().st_size for s in local) + sum(r.members["json"][1] for r in records.values())
    clips_per_epoch = len(records) * cfg.clips_per_sample
    median = {name: round(statistics.median(r[name] for r in rounds), 2) for name in rounds[0]}
    return {
        "config": {"backend": backend, "workers": workers, "samples": samples, "repeats": repeats, "mode": cfg.mode,
                   "num_frames": cfg.num_frames, "clips_per_sample": cfg.clips_per_sample, "url": url, "shards": len(local),
                   "samples_in_shards": len(records)},
        "clips_per_s": median,
        "remote_vs_local": round(statistics.median(r["remote"] / r["local"] for r in rounds), 3),
        "remote_cached_vs_local": round(statistics.median(r["remote_cached"] / r["local"] for r in rounds), 3),
        "video_bytes_per_clip": round(video_bytes / (len(timed) * cfg.clips_per_sample)),
        "startup_bytes_per_clip_of_one_epoch": round(startup_bytes / clips_per_epoch, 1),
        "rounds": rounds,
    }


def main(argv=None) -> None:
    parser = ArgumentParser(prog="python -m bench remote", description=__doc__)
    parser.add_argument("out", help="OUT folder of preprocess on local disk")
    parser.add_argument("url", help="the same folder served over HTTP (or any fsspec URL)")
    parser.add_argument("--backend", choices=BACKENDS, default="reference", help="loader backend")
    parser.add_argument("--workers", type=int, default=2, help="reference worker processes / DALI CPU threads")
    parser.add_argument("--samples", type=int, default=36, help="samples timed per method and round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (every method once per round); medians are reported")
    parser.add_argument("--num-frames", type=int, default=16, help="T, frames per clip")
    parser.add_argument("--output", type=Path, help="write the result as JSON")
    add_remote_arguments(parser)
    args = parser.parse_args(argv)
    cfg = LoaderConfig(mode="pretrain", num_frames=args.num_frames, batch_size=4)
    result = run(args.out, args.url, cfg, backend=args.backend, samples=args.samples, workers=args.workers,
                 repeats=args.repeats, remote=remote_options(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
