"""``training/step_metrics.py``: per-step values kept on the device, one flush per log window."""

from __future__ import annotations

import numpy as np
import torch


def test_step_metrics_one_flush_per_window_keeps_every_step():
    from training.distributed import DistInfo
    from training.step_metrics import StepMetrics

    metrics = StepMetrics(DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    losses = [2.5, 2.25, 2.0]
    for i, loss in enumerate(losses):
        metrics.add(step=i + 1, epoch=0, lr=0.1, clips=8, wait_s=0.0, values={"loss": torch.tensor(loss), "acc": torch.tensor(float("nan")),
                                                                            "grad_norm": torch.tensor(1.5)})
    records = metrics.flush()
    assert [r["step"] for r in records] == [1, 2, 3] and [r["loss"] for r in records] == losses
    assert all(np.isnan(r["acc"]) and r["grad_norm"] == 1.5 and r["clips_per_s"] > 0 and 0 <= r["data_wait_pct"] <= 100 for r in records)
    assert metrics.flush() == []  # the window was emptied
