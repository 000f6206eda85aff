"""``preprocess --executor ray``: the per-video work (probe, transcode, validate) as Ray tasks on a cluster.

Each input is one task that runs :func:`media.process_video` into a temporary folder on whichever node it
lands, and returns the outcome with the encoded files' bytes. The driver (the ``preprocess`` process)
writes them into the staging folder and records the outcome exactly as the local pool does
(``pool.record_outcome``), so staging, resume, the rejects report, the progress bar and the packing are the
same code, and the shards are byte-identical to a local run of the same inputs and seed. Only the inputs
must be readable at the same path on every node (a shared file system); OUT is written by the driver alone.

A task whose worker process dies (killed, out of memory, a node lost) is retried by Ray up to
``max_retries`` times; an input whose task still fails is rejected alone with the reason, like an input
that crashes the local pool twice. Needs the ``ray`` extra (``pip install 'speedssl[ray]'``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from shardformat import atomic_write

from . import media
from .inputs import Input, PreprocessError
from .media import EncodeParams, Rejection, process_video
from .pool import record_outcome

#: Ray retries of a task whose worker process died, before the input is rejected.
MAX_RETRIES = 3
#: Tasks submitted ahead of the results collected: bounds the driver's memory (each result holds the encoded files).
IN_FLIGHT_PER_CPU = 2


def _transcode_on_worker(src: str, key: str, params: EncodeParams):
    """Ray task: ``process_video`` into a private temporary folder; returns the Rejection, or the segments
    with their files' bytes. Never raises for a bad input (``process_video`` does not)."""
    media.FFMPEG_DIES_WITH_PARENT = True  # a killed Ray worker takes its ffmpeg along (Ray then retries the task)
    work = tempfile.mkdtemp(prefix=f"speedssl-{key}-")
    try:
        outcome = process_video(Path(src), Path(work), key, params)
        if isinstance(outcome, Rejection):
            return outcome, {}
        return outcome, {seg.file: (Path(work) / seg.file).read_bytes() for seg in outcome}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _connect(address: str | None):
    try:
        import ray
    except ImportError:
        raise PreprocessError("--executor ray needs the ray package: pip install 'speedssl[ray]'") from None
    if not ray.is_initialized():
        # address None: join the cluster named by RAY_ADDRESS, else start a local Ray on this machine
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), log_to_driver=False, include_dashboard=False)
    return ray


def transcode_all_ray(todo: list[Input], staging: Path, params: EncodeParams, advance: Callable[[], None], *,
                      address: str | None = None, max_retries: int = MAX_RETRIES) -> None:
    """Transcode every input of ``todo`` as Ray tasks and stage each outcome as it arrives."""
    if not todo:
        return
    ray = _connect(address)
    task = ray.remote(num_cpus=1, max_retries=max_retries)(_transcode_on_worker)
    window = max(2, IN_FLIGHT_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
    queue, pending = list(todo), {}
    while queue or pending:
        while queue and len(pending) < window:
            item = queue.pop(0)
            pending[task.remote(str(item.path), item.key, params)] = item
        ready, _ = ray.wait(list(pending), num_returns=1)
        item = pending.pop(ready[0])
        try:
            outcome, files = ray.get(ready[0])
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayTaskError, ray.exceptions.TaskUnschedulableError,
                ray.exceptions.NodeDiedError) as e:
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            outcome, files = Rejection(f"Ray task failed after {max_retries} retries: {type(e).__name__}: {reason}", "transcode"), {}
        for name, data in files.items():
            atomic_write(staging / name, data)
        record_outcome(staging, item.key, outcome)
        advance()
