"""The one interface both backends implement: a stream of per-sample results for a rank's epochs.

``loader.VideoLoader`` plans an epoch (``plan.py``), asks its stream for the results of that plan's work items
and assembles batches from them; it never looks inside a backend. ``pipeline/reference/`` and ``pipeline/dali/``
each provide one class of this shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from pipeline.io.shard_reader import BadSampleError, SampleRecord
from pipeline.plan import SampleResult

#: (samples, epoch, count) of a pass over a rank's epoch: the arguments of :meth:`SampleStream.results`.
Pass = tuple[list[SampleRecord], int, int]


@runtime_checkable
class SampleStream(Protocol):
    """Per-sample results of a backend, in reading order (the work items of ``plan.epoch_results``)."""

    def results(self, samples: list[SampleRecord], *, epoch: int, count: int,
                upcoming: Pass | None = None) -> Iterator[SampleResult | BadSampleError]:
        """One result per work item of ``samples`` for ``epoch``: eval reads every sample once; pretrain/finetune
        reads until ``count`` good results came. ``upcoming``: the pass expected after this one, which a
        backend with long-lived workers may start on early (others ignore it). Closing the iterator early
        is allowed."""
        ...

    def decoded_frames_per_clip(self) -> float | None:
        """Frames the decoder was asked to decode per clip returned, so far; None where not counted."""
        ...

    def close(self) -> None:
        """Stop worker processes or threads; the stream is not used afterwards."""
        ...
