"""Loader soak: run ``build_loader`` for thousands of batches and watch memory.

    python tests/soak_loader.py                       # 2,000 batches (or 180 s), reference backend, 2 workers
    python tests/soak_loader.py --backend dali --batches 500 --json soak.json

The dataset is the real builder's output for 8 frame-numbered videos, packed again into one shard with each
sample repeated ``--copies`` times under new keys (so an epoch is long and memory is not flattered by a tiny
working set). Epochs roll over with ``set_epoch``, as in training. Memory is sampled every ``--every``
batches: the loader process's RSS, and the PSS (proportional set size: shared pages split between
processes, so nothing is counted twice) of it plus its worker processes. Prints a table, and with ``--json``
writes the numbers (``tests/test_reliability_soak.py`` runs a short version and bounds the growth).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_helpers import build_tiny_shards, tar_samples  # noqa: E402

from pipeline import LoaderConfig, build_loader  # noqa: E402
from pipeline.routing import BACKENDS  # noqa: E402


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _kib(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_mib() -> dict[str, float]:
    """RSS of this process, and PSS of this process plus its descendants (DataLoader workers), in MiB."""
    me = os.getpid()
    return {"rss_mib": _kib(f"/proc/{me}/status", "VmRSS") / 1024,
            "tree_pss_mib": sum(_kib(f"/proc/{p}/smaps_rollup", "Pss") for p in _tree(me)) / 1024,
            "processes": len(_tree(me))}


def make_dataset(root: Path, copies: int) -> str:
    """One shard holding each of 8 built samples ``copies`` times under distinct keys."""
    out = build_tiny_shards(root, videos={f"{'ab'[i % 2]}/v{i}": 40 + 8 * i for i in range(8)})
    samples = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        samples.update(tar_samples(tar))
    shard = root / "soak.tar"
    with tarfile.open(shard, "w") as tar:
        for copy in range(copies):
            for key, members in samples.items():
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}c{copy:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(shard)


def soak(shard: str, *, batches: int, time_cap_s: float, backend: str, workers: int, batch_size: int, every: int,
         warmup: int, hold: bool = False) -> dict:
    cfg = LoaderConfig(mode="pretrain", num_frames=4, speeds=(-4, -2, -1, 1, 2, 4), num_clips=3, batch_size=batch_size,
                       resize=32, crop_size=32, seed=0)
    loader = build_loader([shard], cfg, backend=backend, num_workers=workers, reuse_host_memory=True)  # as train.py
    samples: list[dict] = [{"batch": 0, "s": 0.0, **memory_mib()}]
    started, done, epoch = time.monotonic(), 0, 0
    clips_shape, held = None, []
    while done < batches and time.monotonic() - started < time_cap_s:
        loader.set_epoch(epoch)
        for batch in loader:
            clips_shape = clips_shape or list(batch["clips"].shape)
            assert list(batch["clips"].shape) == clips_shape
            done += 1
            if hold:  # a deliberate leak (a loop that keeps every batch), to show the soak detects one
                held.append(batch["clips"])
            if done % every == 0 or done == warmup:
                samples.append({"batch": done, "s": time.monotonic() - started, **memory_mib()})
            if done >= batches or time.monotonic() - started >= time_cap_s:
                break
        epoch += 1
    wall = time.monotonic() - started
    if samples[-1]["batch"] != done:
        samples.append({"batch": done, "s": wall, **memory_mib()})
    after_warmup = [s for s in samples if s["batch"] >= warmup] or samples[-1:]
    first, last = after_warmup[0], samples[-1]
    return {
        "backend": loader.backend, "workers": workers, "batch_size": batch_size, "clips_shape": clips_shape,
        "batches": done, "epochs": epoch, "batches_per_epoch": len(loader), "wall_s": wall, "warmup_batches": warmup,
        "rss_start_mib": first["rss_mib"], "rss_end_mib": last["rss_mib"], "rss_max_mib": max(s["rss_mib"] for s in after_warmup),
        "pss_start_mib": first["tree_pss_mib"], "pss_end_mib": last["tree_pss_mib"],
        "pss_max_mib": max(s["tree_pss_mib"] for s in after_warmup),
        "rss_before_loader_mib": samples[0]["rss_mib"], "samples": samples, "skipped": loader.stats["skipped"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batches", type=int, default=2000, help="stop after this many batches")
    parser.add_argument("--time-cap", type=float, default=180.0, help="or after this many seconds")
    parser.add_argument("--backend", choices=BACKENDS, default="reference")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (reference) or DALI threads")
    parser.add_argument("--batch-size", type=int, default=4, help="videos per batch (3 clips of 4x32x32 each)")
    parser.add_argument("--copies", type=int, default=50, help="times each of the 8 videos appears in the shard")
    parser.add_argument("--every", type=int, default=50, help="sample memory every this many batches")
    parser.add_argument("--warmup", type=int, default=100, help="growth is measured from this batch on")
    parser.add_argument("--hold", action="store_true", help="keep every batch alive (a deliberate leak: checks the soak itself)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        shard = make_dataset(Path(tmp), args.copies)
        result = soak(shard, batches=args.batches, time_cap_s=args.time_cap, backend=args.backend, workers=args.workers,
                      batch_size=args.batch_size, every=args.every, warmup=min(args.warmup, args.batches), hold=args.hold)
    print(f"loader soak: {result['backend']}, {result['workers']} workers, batch {result['clips_shape']}, "
          f"{result['batches']} batches ({result['epochs']} epochs of {result['batches_per_epoch']}) in {result['wall_s']:.0f} s")
    print(f"{'batch':>6} {'s':>6} {'RSS MiB':>9} {'tree PSS MiB':>13} {'procs':>6}")
    for s in result["samples"]:
        print(f"{s['batch']:>6} {s['s']:>6.1f} {s['rss_mib']:>9.1f} {s['tree_pss_mib']:>13.1f} {s['processes']:>6}")
    print(f"after warm-up ({result['warmup_batches']} batches): RSS {result['rss_start_mib']:.1f} -> {result['rss_end_mib']:.1f} MiB "
          f"(max {result['rss_max_mib']:.1f}); tree PSS {result['pss_start_mib']:.1f} -> {result['pss_end_mib']:.1f} MiB "
          f"(max {result['pss_max_mib']:.1f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
