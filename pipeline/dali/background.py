"""Produce a loader's batches on a background thread, a few batches ahead of the training loop.

The DALI backend's host work (reading and cutting streams, feeding DALI, waiting for its outputs, cutting and
normalizing clips) would otherwise run on the training thread between steps. Here it runs on one thread per
iteration; the training thread only takes finished batches from a bounded queue.

On a GPU the thread issues its torch work on its own CUDA stream. Each batch travels with an event recorded
after its last kernel; the consumer makes its current stream wait for that event (no host sync) and marks
the batch's tensors as used by its stream (``record_stream``), so the caching allocator does not reuse their
memory while the step still reads them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import nullcontext

import torch

from pipeline.cuda_handover import hand_over

_DONE = object()
#: Name of the thread that makes the batches (benchmarks and tests find it by this name).
THREAD_NAME = "loader-batches"


def background_batches(make: Callable[[], Iterator[dict]], *, depth: int = 2, device: torch.device | None = None) -> Iterator[dict]:
    """Yield the items of ``make()`` (run on a daemon thread, at most ``depth`` ahead). Exceptions from the
    thread are re-raised here; closing this generator stops the thread and closes ``make()``'s iterator."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    cuda = device is not None and device.type == "cuda"
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        source = None
        try:
            if cuda:
                torch.cuda.set_device(device)  # a new thread starts on GPU 0: events and streams must be on ours
            with torch.cuda.stream(torch.cuda.Stream(device)) if cuda else nullcontext():
                source = make()
                for batch in source:
                    event = None
                    if cuda:
                        event = torch.cuda.Event()
                        event.record()  # on this thread's stream: the batch's kernels are before it
                    if not put((batch, event, None)):
                        return
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer, which re-raises it
            put((None, None, e))
        finally:
            if source is not None and hasattr(source, "close"):
                source.close()
            put(_DONE)

    thread = threading.Thread(target=work, name=THREAD_NAME, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            batch, event, error = item
            if error is not None:
                raise error
            if event is not None:
                hand_over(batch, event, torch.cuda.current_stream(device))
            yield batch
    finally:
        stop.set()
        thread.join()
