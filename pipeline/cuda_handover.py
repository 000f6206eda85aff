"""Handing a batch made on one CUDA stream to another, without a host sync: the one definition of the rule
that both producers of GPU batches follow (``dali/background.py``: the DALI loader thread's stream;
``training/prefetch.py``: the host-to-device copy stream)."""

from __future__ import annotations

import torch


def hand_over(batch: dict, producer: torch.cuda.Event | torch.cuda.Stream, consumer: torch.cuda.Stream) -> None:
    """Let ``consumer`` use ``batch``'s CUDA tensors: it waits on the GPU for ``producer`` (an event recorded
    after the batch's last kernel, or the stream that made it), and each tensor is marked as used by
    ``consumer`` (``record_stream``), so the caching allocator does not give its memory to the producer's
    next batch while ``consumer`` still reads it. Other values pass untouched."""
    if isinstance(producer, torch.cuda.Event):
        consumer.wait_event(producer)
    else:
        consumer.wait_stream(producer)
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.is_cuda:
            value.record_stream(consumer)
