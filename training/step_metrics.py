"""Per-step training metrics kept on the device and fetched once per log window.

Reading a loss with ``.item()`` every step makes the host wait for the GPU to finish that step, so the next
step's kernels cannot be queued while it runs. Here each step only records its device tensors; at the end
of a window (every ``--log-every`` steps, and before every checkpoint) one collective averages the whole
window over the ranks and one ``tolist()`` brings it to the host, and every step of the window still gets
its own record in ``metrics.jsonl``.

Throughput is measured per window (the only honest unit without per-step syncs): ``clips_per_s`` is the
window's clips over its wall time, ``data_wait_pct`` the share of that time the loop waited for batches;
each record keeps its own step's ``data_wait_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from training import distributed


@dataclass
class _Step:
    step: int
    epoch: int
    lr: float
    clips: int
    wait_s: float
    values: dict[str, torch.Tensor]


class StepMetrics:
    def __init__(self, info: distributed.DistInfo):
        self.info = info
        self._pending: list[_Step] = []
        self._window_start = time.perf_counter()

    def restart_clock(self) -> None:
        """Start the window's clock now (after set-up work that is not training)."""
        self._window_start = time.perf_counter()

    def add(self, *, step: int, epoch: int, lr: float, clips: int, wait_s: float, values: dict[str, torch.Tensor]) -> None:
        """One step's scalars (0-dim tensors, any device); nothing is read from the device here."""
        self._pending.append(_Step(step, epoch, lr, clips, wait_s, {k: v.detach() for k, v in values.items()}))

    def flush(self) -> list[dict]:
        """The window's records (every rank must call this at the same steps: it runs one collective)."""
        if not self._pending:
            return []
        keys = list(self._pending[0].values)
        table = torch.stack([torch.stack([s.values[k].reshape(()).double() for k in keys]) for s in self._pending])  # (steps, keys)
        rows = distributed.all_reduce_mean(table, self.info).tolist()  # the window's one host sync
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        waited = sum(s.wait_s for s in self._pending)
        clips = sum(s.clips for s in self._pending) * self.info.world_size
        compute_s = max(elapsed - waited, 0.0) / len(self._pending)
        records = [{"step": s.step, "epoch": s.epoch, **dict(zip(keys, row)), "lr": s.lr, "clips_per_s": clips / elapsed,
                    "data_wait_s": s.wait_s, "compute_s": compute_s, "data_wait_pct": min(100.0, 100 * waited / elapsed)}
                   for s, row in zip(self._pending, rows)]
        self._pending = []
        self._window_start = time.perf_counter()
        return records
