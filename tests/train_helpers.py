"""Shared set-up for train.py / demo tests: tiny motion-class shards and the small model settings that run on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from preprocess import build_shards
from synthetic.motion import write_motion_dataset

REPO = Path(__file__).resolve().parents[1]

#: Clip and model settings small enough for a few CPU steps per second.
TINY_DATA = ["--num-frames", "8", "--resize", "32", "--crop-size", "28", "--speeds=-2,-1,1,2", "--num-clips", "3",
             "--batch-size", "2", "--eval-batch-size", "4", "--num-eval-clips", "2", "--num-workers", "0"]
TINY_MODEL = ["--base-width", "4", "--hidden", "16"]
QUIET = ["--no-progress", "--log-every", "100"]


def build_motion_shards(root: Path, *, train_per_class: int = 2, test_per_class: int = 1, num_frames: int = 24) -> Path:
    """Motion-class videos (32x32) -> shards with labelled ``train`` and ``test`` splits in ``root/shards``
    (built once per session: ``conftest.motion_shards``)."""
    out = root / "shards"
    src = write_motion_dataset(root / "src", train_per_class=train_per_class, test_per_class=test_per_class, unlabeled=0,
                               size=32, num_frames=num_frames, slow=1, fast=2, seed=0)
    for split in ("train", "test"):
        build_shards(src[split], out, split=split, labels_from_dirs=True, short_side=32, min_frames=8, progress=False)
    return out


def run_train(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` in a subprocess from the repository root; raises with its output on failure."""
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def losses(run_dir: Path) -> dict[int, float]:
    """step -> loss from a run's metrics.jsonl."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in lines}
