"""The GPU readiness check that docker/gpu_check.sh runs (see there and docs/gpu.md). A file, not a heredoc:
preprocess's worker processes are spawned, and a spawned child re-imports its parent's main module by path."""

import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

import train
from pipeline import LoaderConfig, build_loader, list_shards
from pipeline.io.shard_reader import scan_shards
from pipeline.dali.stream_cut import _runs
from preprocess import build_shards
from synthetic.motion import write_motion_dataset
from synthetic.videos import read_frame_index, write_numbered_video


def main() -> int:
    work = Path(os.environ["GPU_CHECK_WORK"])
    steps, batch = int(os.environ["GPU_CHECK_STEPS"]), int(os.environ["GPU_CHECK_BATCH"])
    workers = min(16, os.cpu_count() or 1)
    started = time.perf_counter()
    rows = []  # (check, ok, summary)


    def check(name):
        """Run one check; an exception is a FAIL row with its reason, and the other checks still run."""
        def wrap(fn):
            t0 = time.perf_counter()
            try:
                ok, summary = fn()
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                ok, summary = False, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            rows.append((name, ok, f"{summary} [{time.perf_counter() - t0:.0f} s]"))
            return fn
        return wrap


    def numbered_shards(codec: str) -> list[str]:
        src = work / "numbered_src"
        if not src.is_dir():
            for i, frames in enumerate((64, 96, 130, 160)):
                write_numbered_video(src / "walk" / f"v{i}.mp4", num_frames=frames, vcodec="libx264")
        out = work / f"numbered_{codec}"
        build_shards(src, out, labels_from_dirs=True, codec=codec, gop=16, min_frames=16, workers=workers, progress=False)
        return list_shards(out)


    RAW = LoaderConfig(mode="pretrain", num_frames=16, speeds=(-8, -4, -2, -1, 1, 2, 4, 8), num_clips=4, batch_size=2,
                       resize=128, crop_size=128, augment=False)


    def identity(shards, backend="dali", epochs=3):
        loader = build_loader(shards, RAW, backend=backend, device="cuda", num_workers=4, normalized=False)
        checked = mismatched = 0
        speeds = set()
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            for b in loader:
                clips = b["clips"].cpu().numpy()  # (B, K, T, S, S, 3) uint8
                drawn = np.array([read_frame_index(f) for f in clips.reshape(-1, *clips.shape[-3:])]).reshape(clips.shape[:3])
                checked += drawn.size
                mismatched += int((drawn != b["frame_indices"].numpy()).sum())
                speeds |= set(b["speeds"].flatten().tolist())
        return loader, checked, mismatched, speeds


    for codec in ("vp9", "h264"):
        @check(f"identity_{codec}")
        def _(codec=codec):
            loader, checked, mismatched, speeds = identity(numbered_shards(codec))
            ok = loader.backend == "dali-gpu" and checked > 0 and mismatched == 0 and speeds == set(RAW.speeds)
            return ok, f"backend {loader.backend}, {checked} frames checked, {mismatched} wrong, speeds {sorted(speeds)}"


    @check("mjpeg_routing")
    def _():
        loader, checked, mismatched, _ = identity(numbered_shards("mjpeg"), backend="auto", epochs=1)
        return loader.backend == "reference" and mismatched == 0 and checked > 0, f"backend {loader.backend} ({loader.route_reason}), {mismatched}/{checked} wrong"


    # 300-frame motion videos: the loader measurements and the pretrain read the same shards.
    videos = write_motion_dataset(work / "motion", train_per_class=2, test_per_class=2, unlabeled=96, size=128, num_frames=300, slow=2, fast=5)
    build_shards(videos["unlabeled"], work / "motion_shards", split="train", short_side=128, workers=workers, progress=False)
    long_shards = list_shards(work / "motion_shards")
    PRETEXT = LoaderConfig(mode="pretrain", num_frames=16, speeds=(-8, -4, -2, -1, 1, 2, 4, 8), num_clips=4, batch_size=batch, resize=128, crop_size=112)
    loader_rates = {}


    def loader_rate(backend: str, num_workers: int, epochs: int = 4):
        """(loader, clips/s, a seeking decoder's decoded frames per returned frame). Each epoch's first batch is
        not timed: it holds the epoch's start-up (DALI pipeline build, worker start), which long epochs amortize."""
        loader = build_loader(long_shards, PRETEXT, backend=backend, device="cuda", num_workers=num_workers, reuse_host_memory=True)
        records = {r.key: r for r in scan_shards(long_shards)[0]}
        clips, elapsed, seeking, returned = 0, 0.0, 0, 0
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            t0 = None
            for b in loader:
                if t0 is None:
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    continue
                clips += b["clips"].shape[0] * b["clips"].shape[1]
                for key, frames in zip(b["key"], b["frame_indices"].numpy()):
                    keyframes = np.arange(0, records[key].video_frames, 16)  # preprocess's default closed GOP
                    seeking += sum(e - s + 1 for s, e in _runs(np.unique(frames), keyframes))
                    returned += frames.size
            torch.cuda.synchronize()
            elapsed += time.perf_counter() - t0
        return loader, clips / elapsed, seeking / returned


    @check("loader_dali_gpu")
    def _():
        loader, rate, seeking = loader_rate("dali", 0)
        loader_rates["dali-gpu"] = rate
        decoded = loader.decoded_frames_per_clip / PRETEXT.num_frames
        return loader.backend == "dali-gpu" and decoded <= 1.15 * seeking, (
            f"{rate:.0f} clips/s, decoded/returned frames {decoded:.2f} (seeking decoder {seeking:.2f})")


    @check("loader_reference")
    def _():
        loader, rate, _ = loader_rate("reference", 16)
        loader_rates["reference"] = rate
        return loader.backend == "reference", f"{rate:.0f} clips/s with 16 workers"


    @check("pretrain")
    def _():
        out = work / "run"
        res = train.main(["pretrain", "--data", str(work / "motion_shards"), "--out", str(out), "--backend", "dali", "--arch", "r2plus1d_18",
                          "--base-width", "64", "--num-frames", "16", "--resize", "128", "--crop-size", "112", "--speeds=-8,-4,-2,-1,1,2,4,8",
                          "--num-clips", "4", "--batch-size", str(batch), "--num-workers", "4", "--max-steps", str(steps),
                          "--warmup-steps", "5", "--lr", "0.05", "--no-progress", "--log-every", "10", "--amp"])
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        steady = [r for r in records if r["step"] > 10] or records  # the first window holds cudnn autotuning and DALI start-up
        rate = float(np.mean([r["clips_per_s"] for r in steady]))
        wait = float(np.mean([r["data_wait_pct"] for r in steady]))
        ok = res["step"] == steps and all(np.isfinite(r["loss"]) for r in records)
        return ok, f"R(2+1)D-18 bf16, batch {batch}x4 clips: {rate:.0f} clips/s, data wait {wait:.0f}%, loss {records[0]['loss']:.2f} -> {records[-1]['loss']:.2f}"


    width = max(len(name) for name, _, _ in rows)
    print(f"\n==== gpu_check summary ({torch.cuda.get_device_name(0)}, {time.perf_counter() - started:.0f} s) ====")
    for name, ok, summary in rows:
        print(f"{'PASS' if ok else 'FAIL'}  {name.ljust(width)}  {summary}")
    if len(loader_rates) == 2:
        print(f"dali-gpu / reference(16 workers) loader clips/s: {loader_rates['dali-gpu'] / loader_rates['reference']:.2f}")
    print(json.dumps({"ok": all(ok for _, ok, _ in rows), "checks": {name: {"ok": ok, "summary": s} for name, ok, s in rows}}))
    return 0 if all(ok for _, ok, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
