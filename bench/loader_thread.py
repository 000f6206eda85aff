"""What the DALI loader costs the training thread, with the streams cut on the loader thread (``--num-workers 0``,
as before) and in cutting processes (``--num-workers 1``, the default now), on the CPU with DALI's CPU decoder.

    python -m bench loader-thread SHARD_DIR [--epochs 3] [--steps 40] [--rounds 3]

Both settings run DALI's CPU decoder with one thread (its thread count is ``max(1, num_workers)``); only where the
cutting runs differs. For each batch it receives, the consumer runs a fixed Python-bound "step" (``--steps``
small torch ops, the kind of per-kernel dispatch a GPU training step is made of) while the loader prepares the
next batches in the background. Reported per batch, medians over batches:

* ``step_ms``: the training thread's wall time for that fixed step, next to ``idle_step_ms``, the same step with
  no loader running: the difference is what the loader's work in the training process (the GIL it holds, the
  cores it takes) costs the training thread;
* ``loader_thread_cpu_ms``: CPU time of the loader's thread (reading, cutting, feeding DALI, cutting clips):
  the Python the training process runs for the loader under the GIL;
* ``clips_per_s``: what the loader delivered meanwhile.

Pretext mode, K=4 clips of T=16 frames at speeds +-1,2,4,8, 112 px crops from 128 px frames, batch 16 (what a GPU
step consumes), one torch thread. ``--rounds`` alternates the two settings to spread a shared machine's drift.
"""

from __future__ import annotations

import json
import statistics
import threading
import time

import torch

from pipeline.cli_syntax import ArgumentParser
from pipeline.config import LoaderConfig
from pipeline.dali.background import THREAD_NAME
from pipeline.io.shard_reader import list_shards
from pipeline.loader import build_loader


def python_step(x: torch.Tensor, steps: int) -> float:
    """Seconds for ``steps`` tiny torch ops on this thread (dispatch-bound: each holds the GIL)."""
    started = time.perf_counter()
    for _ in range(steps):
        x = x.add(1.0).mul_(0.5)
    return time.perf_counter() - started


def _loader_thread() -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name == THREAD_NAME), None)


def _thread_cpu(thread: threading.Thread | None) -> float | None:
    """CPU seconds ``thread`` has used so far (Linux: its own CPU clock); None once it is gone."""
    if thread is None or thread.ident is None or not thread.is_alive():
        return None
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (OSError, ProcessLookupError):
        return None


def measure(shards: list[str], cfg: LoaderConfig, *, workers: int, epochs: int, steps: int) -> dict:
    loader = build_loader(shards, cfg, backend="dali", num_workers=workers)
    x = torch.zeros(64)
    step_s, loader_cpu, clips, elapsed = [], [], 0, 0.0
    try:
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            batches = iter(loader)
            first = next(batches)  # holds the epoch's start (pipeline build on the first): not timed
            thread = _loader_thread()
            last_cpu, started = _thread_cpu(thread), time.perf_counter()
            del first
            for batch in batches:
                clips += batch["clips"].shape[0] * batch["clips"].shape[1]
                step_s.append(python_step(x, steps))
                now = _thread_cpu(thread)
                if now is not None and last_cpu is not None:
                    loader_cpu.append(now - last_cpu)
                last_cpu = now
            elapsed += time.perf_counter() - started
    finally:
        loader.close()
    return {"workers": workers, "step_ms": 1e3 * statistics.median(step_s), "loader_thread_cpu_ms": 1e3 * statistics.median(loader_cpu) if loader_cpu else None,
            "clips_per_s": clips / elapsed if elapsed else None, "batches": len(step_s)}


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m bench loader-thread", description=__doc__)  # shows every default
    parser.add_argument("shards", help="a shard folder (OUT of preprocess) of long videos, e.g. .device/shards/motion")
    parser.add_argument("--split", default="train", help="split of SHARDS to read")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per round")
    parser.add_argument("--steps", type=int, default=4000, help="torch ops in the consumer's step per batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both settings; medians are reported")
    parser.add_argument("--batch", type=int, default=16, help="samples per batch")
    parser.add_argument("--out", help="also write the results here (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    shards = list_shards(args.shards, split=args.split)
    cfg = LoaderConfig(mode="pretrain", num_frames=16, num_clips=4, batch_size=args.batch, resize=128, crop_size=112)
    x = torch.zeros(64)
    python_step(x, args.steps)
    idle = statistics.median(python_step(x, args.steps) for _ in range(20))
    runs = {0: [], 1: []}
    for r in range(args.rounds):
        for workers in (0, 1) if r % 2 == 0 else (1, 0):
            runs[workers].append(measure(shards, cfg, workers=workers, epochs=args.epochs, steps=args.steps))
            print(json.dumps(runs[workers][-1]), flush=True)
    result = {"idle_step_ms": 1e3 * idle, "steps": args.steps, "batch": args.batch}
    for workers, name in ((0, "cut_on_loader_thread"), (1, "cut_in_a_process")):
        result[name] = {k: statistics.median(run[k] for run in runs[workers]) for k in ("step_ms", "loader_thread_cpu_ms", "clips_per_s")}
        result[name]["loader_thread_cpu_ms_per_sample"] = result[name]["loader_thread_cpu_ms"] / args.batch
        result[name]["rounds"] = [{k: run[k] for k in ("step_ms", "loader_thread_cpu_ms", "clips_per_s")} for run in runs[workers]]
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
