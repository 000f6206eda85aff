"""The worker pool: transcode inputs into the staging folder, each outcome recorded atomically and last.

An input's outcome is ``STAGING/KEY.result.json``: ``{"status": "ok", "segments": [...]}`` (its encoded
files lie beside it) or ``{"status": "rejected", "reason", "stage"}``. An input with a readable outcome
whose files exist is done, so a killed run resumes where it stopped. A crashing worker (a decoder
segfault, an OOM kill) never ends the batch: the inputs it had in flight are retried one per fresh
process, and the one that crashes again is rejected alone.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

from shardformat import atomic_write

from . import media
from .inputs import Input
from .media import EncodeParams, Rejection, process_videos


def record_outcome(staging: Path, key: str, outcome: list[media.Segment] | Rejection) -> dict:
    """Write ``KEY.result.json`` atomically and return it."""
    if isinstance(outcome, Rejection):
        record = {"status": "rejected", "reason": outcome.reason, "stage": outcome.stage}
    else:
        record = {"status": "ok", "segments": [asdict(s) for s in outcome]}
    atomic_write(staging / f"{key}.result.json", json.dumps(record, sort_keys=True))
    return record


def load_outcome(staging: Path, key: str) -> dict | None:
    """The staged outcome for ``key``, or None if absent or its files are gone (then it is redone)."""
    path = staging / f"{key}.result.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if record["status"] == "ok" and not all((staging / s["file"]).is_file() for s in record["segments"]):
        return None
    return record


def _transcode_task(items: list[tuple[str, str]], staging: str, params: EncodeParams) -> int:
    """Worker entry point: transcode a group of ``(src, key)`` inputs (one ffmpeg process for the group,
    ``media.process_videos``) and record each outcome atomically in the staging folder. Returns how many.

    A ``KEY.started`` marker lives while an input is in flight, so a worker crash can be pinned on the
    inputs that were.
    """
    markers = [Path(staging) / f"{key}.started" for _, key in items]
    for marker in markers:
        marker.touch()
    outcomes = process_videos([(Path(src), key) for src, key in items], Path(staging), params)
    for (_, key), outcome, marker in zip(items, outcomes, markers):
        record_outcome(Path(staging), key, outcome)
        marker.unlink(missing_ok=True)
    return len(items)


MAX_GROUP = 6
"""Inputs per ffmpeg process at most (``media.process_videos``): start-up is paid once per group; the cap
keeps the memory of a group's decoders and filter graphs, all open at once, to a few inputs' worth."""


def group_inputs(items: list, workers: int) -> list[list]:
    """The tasks of the pool, in order: ``items`` (largest first, see ``_run_pool``) in consecutive groups
    of up to ``MAX_GROUP``, small enough that each transcode slot gets at least two, and the last
    ``2 * workers`` items alone. A task is the unit the slots share out, so ending on small ones lets them
    finish together, and the last validation (not overlapped by any transcode) is one video's."""
    tail = min(len(items), 2 * workers)
    head = items[: len(items) - tail]
    size = max(1, min(MAX_GROUP, len(head) // (2 * workers)))
    return [head[i : i + size] for i in range(0, len(head), size)] + [[item] for item in items[len(head) :]]


def pool_size(workers: int, cores: int | None = None) -> int:
    """Processes for ``workers`` transcode slots: one more, which validates a finished output on a core no
    transcode uses, when there is such a core; none more when every core already runs a transcode (there
    the spare would only compete for the same CPU and cost its start-up, about 0.25 s of CPU)."""
    cores = cores or os.cpu_count() or 1
    return workers + 1 if workers < cores else workers


def _bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # rejected when it is opened


def _init_worker(parent_pid: int, transcode_slots) -> None:
    """Pool worker set-up: die with the builder (and take ffmpeg along) instead of lingering as an orphan;
    run ffmpeg only while holding one of the pool's ``transcode_slots``."""
    media.die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the builder's to handle (it stops the queue)
    media.FFMPEG_DIES_WITH_PARENT = True
    media.TRANSCODE_SLOTS = transcode_slots
    if os.getppid() != parent_pid:  # the builder died before prctl took effect
        os._exit(1)


def _run_pool(items: list[Input], staging: Path, params: EncodeParams, workers: int,
              advance: Callable[[], None]) -> tuple[bool, int]:
    """Transcode ``items`` with ``workers`` ffmpeg transcodes at a time, in a pool of ``pool_size(workers)``
    processes: a process whose transcode has finished validates its outputs (a full decode, about 10% of the
    transcode's CPU) while the next transcode already runs in another (``media.TRANSCODE_SLOTS``).

    Returns (False if a worker process died, number of outcomes reported to ``advance``)."""
    reported = 0
    for item in items:
        (staging / f"{item.key}.started").unlink(missing_ok=True)
    # spawn: workers inherit no file descriptors (in particular not the split lock) and no threads. (Not a
    # fork server, whose start-up is shared: its workers keep it alive, so they would outlive a killed builder.)
    context = multiprocessing.get_context("spawn")
    slots = context.Semaphore(workers)  # a new pool after a worker crash gets a new one: none is left held
    with ProcessPoolExecutor(max_workers=min(pool_size(workers), len(items)), mp_context=context,
                             initializer=_init_worker, initargs=(os.getpid(), slots)) as pool:
        largest_first = sorted(items, key=lambda i: _bytes(i.path), reverse=True)  # bytes: a proxy for transcode time
        futures = [pool.submit(_transcode_task, [(str(i.path), i.key) for i in group], str(staging), params)
                   for group in group_inputs(largest_first, workers)]
        try:
            for future in as_completed(futures):
                for _ in range(future.result()):
                    advance()
                    reported += 1
        except BrokenProcessPool:
            return False, reported
        except KeyboardInterrupt:  # finish the running transcodes (their work is kept), start no queued one
            print("preprocess: interrupted: letting the running transcodes finish (Ctrl-C again stops them now)",
                  file=sys.stderr, flush=True)
            try:
                pool.shutdown(wait=True, cancel_futures=True)
            except KeyboardInterrupt:  # the second one: stop now (their ffmpeg dies with them; nothing half-done is kept)
                for process in list(pool._processes.values()):  # no public handle on the workers
                    process.kill()
                raise
            raise
        except BaseException:  # a job-level failure (full disk): do not start the queued inputs
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return True, reported


def transcode_all(todo: list[Input], staging: Path, params: EncodeParams, workers: int,
                  advance: Callable[[], None]) -> None:
    """Transcode every input of ``todo`` into the staging folder; a worker crash never ends the batch."""
    remaining = list(todo)
    while remaining:
        finished, reported = _run_pool(remaining, staging, params, workers, advance)
        if finished:
            return
        pending = [i for i in remaining if load_outcome(staging, i.key) is None]
        for _ in range(len(remaining) - len(pending) - reported):  # done, but not reported before the crash
            advance()
        suspects = [i for i in pending if (staging / f"{i.key}.started").exists()] or pending
        for item in suspects:
            if not _run_pool([item], staging, params, 1, advance)[0]:
                record_outcome(staging, item.key, Rejection("worker process crashed on this file (e.g. a decoder segfault or out of memory)", "transcode"))
                advance()
        remaining = [i for i in pending if load_outcome(staging, i.key) is None]


@contextlib.contextmanager
def progress_bar(enabled: bool, *, total: int, done: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar over videos (done, videos/s, ETA) on stderr, or a no-op; yields ``advance()``."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]transcoding"), BarColumn(), MofNCompleteColumn(), TextColumn("videos"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("transcode", total=total, completed=done, rate="")
        began, start_done = time.perf_counter(), done

        def advance() -> None:
            bar.advance(task)
            finished = bar.tasks[0].completed - start_done
            bar.update(task, rate=f"{finished / max(time.perf_counter() - began, 1e-9):.2f} videos/s")

        yield advance
