"""Where the reference loader's time goes, per sample: a worker's ``load_sample`` under cProfile (grouped into
demux/Python loop, decode, colour conversion, crop copies, ...), and the training process's share (receiving
a sample, normalizing it out of the worker's ring slot into the batch) timed in a real loader run.

    python -m bench profile-loader SHARD_DIR [--epochs 3] [--workers 1]

Pretext mode with the benchmark's settings (K=4, T=16, speeds +-1,2,4,8, 112 px crops, batch 4), one torch
thread. cProfile's own overhead inflates the Python-heavy groups; the shares are for ranking, the
per-sample milliseconds of the unprofiled run are the real cost.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import time

import torch

from pipeline.cli_syntax import ArgumentParser
from pipeline.config import LoaderConfig
from pipeline.loader import Collator, build_loader
from pipeline.reference.stream import OutputRing, ReferenceStream, load_sample
from pipeline.io.shard_reader import list_shards, scan_shards

#: Worker profile groups: (name, predicate on cProfile's (file, line, function) key), first match wins.
GROUPS = (
    ("decode (libavcodec)", lambda f, fn: fn == "<method 'decode' of 'av.codec.context.CodecContext' objects>"),
    ("demux and the per-frame Python loop", lambda f, fn: fn in ("pyav_union_decode", "_decode_into", "missing",
                                                                  "<method 'seek' of 'av.container.input.InputContainer' objects>")
     or "demux" in fn),
    ("crop copies in YUV", lambda f, fn: f.endswith("yuv_clips.py") and fn in ("put", "_plane_rows", "<genexpr>", "__init__", "_tall_frame")
     or fn in ("<built-in method numpy.frombuffer>", "<method 'reshape' of 'numpy.ndarray' objects>")),
    ("colour conversion", lambda f, fn: "reformat" in fn),
    ("container open", lambda f, fn: fn == "<av.container.core.open>" or "close" in fn),
    ("flip and copy into the clip tensor", lambda f, fn: fn in ("<method 'flip' of 'torch._C.TensorBase' objects>",
                                                               "<method 'copy_' of 'torch._C.TensorBase' objects>")
     or "copyto" in fn
     or f.endswith("yuv_clips.py") and fn == "finish"),
    ("shard reads", lambda f, fn: f.endswith("shard_reader.py") or fn == "<built-in method posix.pread>"),
    ("sampling and planning", lambda f, fn: f.endswith(("sampler.py", "plan.py", "views.py"))),
)


def worker_profile(records, cfg: LoaderConfig, epochs: int) -> dict:
    """ms per sample of ``load_sample`` unprofiled, and the share of each group under cProfile. The clips
    go into a ring slot and the slot is freed again, as in a worker process."""
    ring = OutputRing(2)

    def run():
        for epoch in range(1, epochs + 1):
            for record in records:
                result = load_sample(record, 0, cfg, epoch, ring=ring)
                if isinstance(result, Exception):
                    raise result
                ring.release(result.clips)

    run()  # warm-up
    started = time.process_time()
    run()
    ms = 1000 * (time.process_time() - started) / (epochs * len(records))
    profile = cProfile.Profile()
    profile.enable()
    run()
    profile.disable()
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, primitive, tottime, cumtime, callers)
    total = sum(v[2] for v in stats.values())
    shares = {name: 0.0 for name, _ in GROUPS} | {"other": 0.0}
    for (file, _line, name), value in stats.items():
        group = next((g for g, match in GROUPS if match(file, name)), "other")
        shares[group] += value[2] / total
    return {"ms_per_sample": round(ms, 2), "shares": {k: round(v, 3) for k, v in shares.items()}}


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _worker_cpu_seconds(loader) -> float | None:
    """CPU seconds the reference loader's worker processes have used so far (None if unknown)."""
    batches = getattr(loader._stream, "_batches", None)
    pids = [w.pid for w in getattr(batches, "_workers", [])]
    times = [_process_cpu_seconds(pid) for pid in pids]
    return sum(times) if pids and None not in times else None


def training_process_costs(shards, cfg: LoaderConfig, workers: int, epochs: int) -> dict:
    """In a real loader run with ``workers`` processes, per sample (epochs 1.., after a start-up epoch 0):
    the training process's CPU ms receiving samples (IPC, unpickling) and collating them (normalizing them
    straight out of the ring slots), the worker processes' CPU ms (all workers together), and the wall ms."""
    spent = {"receive": 0.0, "collate": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            started = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - started
        return wrapper

    receive, add, finish = ReferenceStream._next_result, Collator.add, Collator.finish
    ReferenceStream._next_result = timed("receive", receive)
    Collator.add, Collator.finish = timed("collate", add), timed("collate", finish)
    try:
        loader = build_loader(shards, cfg, backend="reference", num_workers=workers, reuse_host_memory=True)
        samples, worker_cpu, started = 0, None, None
        for epoch in range(epochs + 1):
            loader.set_epoch(epoch)
            if epoch == 1:  # epoch 0 holds the start-up
                spent.update(receive=0.0, collate=0.0)
                worker_cpu, started = _worker_cpu_seconds(loader), time.perf_counter()
            for batch in loader:
                samples += len(batch["key"]) if epoch else 0
        wall = time.perf_counter() - started
        worker_end = _worker_cpu_seconds(loader)
        loader.close()
    finally:
        ReferenceStream._next_result, Collator.add, Collator.finish = receive, add, finish
    costs = {f"{k}_ms_per_sample": round(1000 * v / samples, 2) for k, v in spent.items()}
    costs["workers_cpu_ms_per_sample"] = None if None in (worker_cpu, worker_end) else round(1000 * (worker_end - worker_cpu) / samples, 2)
    costs["wall_ms_per_sample"] = round(1000 * wall / samples, 2)
    return costs


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m bench profile-loader", description=__doc__)
    parser.add_argument("shards", help="a shard folder (OUT of preprocess)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs profiled")
    parser.add_argument("--workers", type=int, default=1, help="reference worker processes of the training-process measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = LoaderConfig(mode="pretrain", batch_size=4)
    shards = list_shards(args.shards)
    worker = worker_profile(scan_shards(shards)[0], cfg, args.epochs)
    main_costs = training_process_costs(shards, cfg, args.workers, args.epochs)
    print(f"worker: load_sample {worker['ms_per_sample']} ms per sample (unprofiled); shares under cProfile:")
    for name, share in sorted(worker["shares"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:40s} {100 * share:5.1f}%")
    print(f"training process, {args.workers} worker(s): " + ", ".join(f"{k} {v}" for k, v in main_costs.items()))
