#!/usr/bin/env bash
# GPU readiness check (under 8 minutes on one GPU). Run in the image or a set-up checkout:
#
#   docker/gpu_check.sh                  # or: docker/run.sh docker/gpu_check.sh
#
# 1. DALI mixed (NVDEC) decoding returns exactly the frames the sampler asked for: frame-numbered VP9
#    videos, pretext clips at every speed, forward and reverse, each frame's drawn index compared.
# 2. Loader alone: clips/s of the DALI GPU loader on a motion-class shard set (no model).
# 3. A short pretrain (train.py, R3D-18, bf16, DALI GPU loader): training clips/s and data-wait %.
# 4. One summary: PASS/FAIL per check, loader clips/s vs training clips/s.
#
# Environment: WORK [a fresh temp dir, removed at exit], STEPS [60], ARCH [r3d_18], BATCH [16], CHECK_TIMEOUT [480 s].
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$repo"
python=${PYTHON:-python3}
if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU visible (nvidia-smi -L failed)" >&2
    exit 2
fi
nvidia-smi -L

work=${WORK:-$(mktemp -d)}
if [[ -z ${WORK:-} ]]; then
    trap 'rm -rf -- "$work"' EXIT
fi
export GPU_CHECK_WORK=$work GPU_CHECK_STEPS=${STEPS:-60} GPU_CHECK_ARCH=${ARCH:-r3d_18} GPU_CHECK_BATCH=${BATCH:-16}

timeout "${CHECK_TIMEOUT:-480}" "$python" - <<'PY'
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import train
from pipeline import LoaderConfig, build_loader, list_shards
from preprocess import build_shards
from preprocess.motion_dataset import write_motion_dataset
from preprocess.synthetic import read_frame_index, write_numbered_video

work = Path(os.environ["GPU_CHECK_WORK"])
steps, arch, batch = int(os.environ["GPU_CHECK_STEPS"]), os.environ["GPU_CHECK_ARCH"], int(os.environ["GPU_CHECK_BATCH"])
assert torch.cuda.is_available(), "torch sees no CUDA device"
summary = {"device": torch.cuda.get_device_name(0), "checks": {}}
started = time.perf_counter()

# 1. Frame identity through DALI's mixed decoder.
src = work / "numbered"
for i, frames in enumerate((64, 96, 130, 160)):
    write_numbered_video(src / "walk" / f"v{i}.mp4", num_frames=frames, vcodec="libx264")
build_shards(src, work / "numbered_shards", labels_from_dirs=True, codec="vp9", gop=16, min_frames=16, progress=False)
cfg = LoaderConfig(mode="pretext", num_frames=16, speeds=(-8, -4, -2, -1, 1, 2, 4, 8), num_clips=4, batch_size=2,
                   resize=128, crop_size=128, augment=False)
loader = build_loader(list_shards(work / "numbered_shards"), cfg, backend="dali", device="cuda", num_workers=4, normalized=False)
checked = mismatched = 0
speeds_seen = set()
for epoch in range(3):
    loader.set_epoch(epoch)
    for b in loader:
        clips = b["clips"].cpu().numpy()  # (B, K, T, S, S, 3) uint8
        drawn = np.array([read_frame_index(f) for f in clips.reshape(-1, *clips.shape[-3:])]).reshape(clips.shape[:3])
        wanted = b["frames"].cpu().numpy()
        checked += drawn.size
        mismatched += int((drawn != wanted).sum())
        speeds_seen |= set(b["speeds"].flatten().tolist())
ok = loader.backend == "dali-gpu" and checked > 0 and mismatched == 0
summary["checks"]["dali_mixed_frame_identity"] = {"ok": ok, "backend": loader.backend, "frames_checked": checked,
                                                 "mismatched": mismatched, "speeds_seen": sorted(speeds_seen)}

# 2. Loader alone on motion-class videos (112 px crops, 16 frames).
videos = write_motion_dataset(work / "motion", train_per_class=4, test_per_class=2, unlabeled=96, size=128, num_frames=96, slow=2, fast=5)
build_shards(videos["unlabeled"], work / "motion_shards", split="train", short_side=128, progress=False)
for split in ("train", "test"):
    build_shards(videos[split], work / "labelled_shards", split=split, labels_from_dirs=True, short_side=128, progress=False)
cfg = LoaderConfig(mode="pretext", num_frames=16, speeds=(-4, -2, -1, 1, 2, 4), num_clips=4, batch_size=batch, resize=128, crop_size=112)
loader = build_loader(list_shards(work / "motion_shards"), cfg, backend="dali", device="cuda", num_workers=8)
clips, t0 = 0, None
for epoch in range(4):
    loader.set_epoch(epoch)
    for i, b in enumerate(loader):
        if t0 is None:  # the first batch pays for pipeline start-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            continue
        clips += b["clips"].shape[0] * b["clips"].shape[1]
torch.cuda.synchronize()
loader_rate = clips / (time.perf_counter() - t0)
summary["checks"]["loader_alone"] = {"ok": clips > 0 and loader.backend == "dali-gpu", "clips_per_s": loader_rate, "backend": loader.backend}

# 3. Short pretrain on the GPU with the DALI loader, then the eval path.
out = work / "run"
res = train.main(["pretrain", "--data", str(work / "motion_shards"), "--out", str(out), "--backend", "dali", "--arch", arch,
                  "--base-width", "64", "--num-frames", "16", "--resize", "128", "--crop-size", "112", "--speeds=-4,-2,-1,1,2,4",
                  "--num-clips", "4", "--batch-size", str(batch), "--num-workers", "8", "--max-steps", str(steps),
                  "--warmup-steps", "10", "--lr", "0.05", "--no-progress", "--log-every", "20"])
records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
steady = records[len(records) // 4:]  # skip warm-up steps (cudnn autotuning, DALI start-up)
train_rate = sum(r["clips_per_s"] for r in steady) / len(steady)
wait = sum(r["data_wait_pct"] for r in steady) / len(steady)
finite = all(np.isfinite(r["loss"]) for r in records)
ev = train.main(["eval", "--data", str(work / "labelled_shards"), "--init", str(out / "checkpoint.pt"), "--backend", "dali",
                 "--num-eval-clips", "4", "--no-progress"])
summary["checks"]["pretrain"] = {"ok": res["step"] == steps and finite and "R@1" in ev["retrieval"], "steps": res["step"],
                                 "train_clips_per_s": train_rate, "data_wait_pct": wait,
                                 "loss_first": records[0]["loss"], "loss_last": records[-1]["loss"],
                                 "pretext_speed_acc_test": ev.get("pretext_speed_acc")}
summary["loader_vs_training"] = {"loader_clips_per_s": loader_rate, "training_clips_per_s": train_rate, "data_wait_pct": wait,
                                 "bound": "data" if wait > 20 else "compute"}
summary["wall_s"] = time.perf_counter() - started
summary["ok"] = all(c["ok"] for c in summary["checks"].values())

print("\n==== gpu_check summary ====")
for name, c in summary["checks"].items():
    print(f"{'PASS' if c['ok'] else 'FAIL'}  {name}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in c.items() if k != "ok"))
lv = summary["loader_vs_training"]
print(f"loader {lv['loader_clips_per_s']:.0f} clips/s vs training {lv['training_clips_per_s']:.0f} clips/s, "
      f"data wait {lv['data_wait_pct']:.1f}% -> {lv['bound']}-bound; {summary['wall_s']:.0f} s")
print(json.dumps(summary))
sys.exit(0 if summary["ok"] else 1)
PY
