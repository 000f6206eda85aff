"""TensorBoard event files beside ``metrics.jsonl``: the same per-step scalars, eval metrics, and a grid of
sampled input clips once per run.

``tensorboard --logdir runs/`` then shows every run folder as one run. The writer is optional: when the
``tensorboard`` package is not installed (or ``--no-tensorboard`` is given) every method is a no-op, so
the training loop never has to ask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

#: Per-step record fields that are bookkeeping, not curves.
_NOT_SCALARS = {"step", "epoch"}


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ImportError:
        return False
    return True


class TensorBoardLog:
    """Event files in ``log_dir`` (the run folder). ``purge_step``: on resume, events a killed run wrote past
    the checkpoint's step are hidden by TensorBoard, as :class:`~training.logs.MetricsLog` drops those lines."""

    def __init__(self, log_dir: str | Path, *, enabled: bool = True, purge_step: int | None = None):
        self._writer = None
        if enabled and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def scalars(self, record: dict, *, step: int, prefix: str) -> None:
        """Every numeric field of ``record`` as ``{prefix}/{name}`` (e.g. ``train/loss``, ``eval/R@5``)."""
        if self._writer is None:
            return
        for name, value in record.items():
            if name not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{prefix}/{name}", value, step)

    def clips(self, tag: str, clips: torch.Tensor, *, step: int, mean: Sequence[float], std: Sequence[float]) -> None:
        """Clips ``(..., 3, T, H, W)`` (standardized, as the model sees them; e.g. a few samples' ``(N, K, ...)``)
        as one image grid: one row per clip, its frames left to right."""
        if self._writer is None:
            return
        c, t, h, w = clips.shape[-4:]
        x = clips.detach().float().cpu().reshape(-1, c, t, h, w)  # (rows, 3, T, H, W)
        x = x * torch.tensor(std).view(1, 3, 1, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1, 1)
        grid = x.clamp(0, 1).permute(1, 0, 3, 2, 4).reshape(c, -1, t * w)  # (3, rows*H, T*W)
        self._writer.add_image(tag, grid, step, dataformats="CHW")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
